"""PyTorch models in and out: from_torch outputs equal torch's, to_torch round trips the weights,
refusals are one line naming the layer, and a model trained in torch is analysed with
phaseprobe's geometry (Lanczos and scalar curvature against a dense torch Hessian)."""

from __future__ import annotations

import subprocess
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed: pip install 'phaseprobe[torch]' (CI installs torch==2.13.0)")
nn = torch.nn
F = torch.nn.functional

import phaseprobe  # noqa: E402
from phaseprobe.errors import PhaseprobeError  # noqa: E402
from phaseprobe.geometry import lanczos, make_error_fn, params_of, scalar_curvature  # noqa: E402
from phaseprobe.geometry.curvature import curvature_exact  # noqa: E402
from phaseprobe.interop import TorchModelError  # noqa: E402
from tiny_runs import tiny_sweep  # noqa: E402  (the views' shared tiny sweep: digits, MLP depth 2, width 8)

torch.set_num_threads(1)


def _compare(module, in_shape, n=16, seed=0, atol=1e-5):
    """from_torch(module) on each of n random examples equals module.eval() on the batch."""
    torch.manual_seed(seed)
    x = torch.randn(n, *in_shape)
    module.eval()
    with torch.no_grad():
        want = module(x).numpy()
    model = phaseprobe.from_torch(module)
    got = np.asarray(jax.vmap(model)(jnp.asarray(x.numpy())))
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=atol, rtol=1e-5)
    return model


def test_import_phaseprobe_does_not_import_torch():
    code = "import sys, phaseprobe, phaseprobe.interop; assert 'torch' not in sys.modules, 'torch imported'"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    # without torch, the conversion says how to install it (one line)
    code = ("import sys; sys.modules['torch'] = None; import phaseprobe\n"
            "try:\n    phaseprobe.from_torch(object())\n"
            "except phaseprobe.errors.PhaseprobeError as e:\n    print(e)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout == "torch: PyTorch is not installed; pip install 'phaseprobe[torch]' (torch==2.13.0)\n", r.stdout + r.stderr


def test_nested_sequential_mlp_matches_torch():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(12, 16), nn.ReLU(),
                        nn.Sequential(nn.Linear(16, 16), nn.Tanh(), nn.Sequential(nn.Linear(16, 8), nn.Sigmoid())),
                        nn.Identity(), nn.Linear(8, 5))
    model = _compare(net, (12,))
    assert isinstance(model, eqx.Module)
    assert model.names == ("0", "1", "2", "3", "4")
    # a bare layer converts too, and Linear acts on the last axis as in torch
    _compare(nn.Linear(6, 3), (4, 6))


@pytest.mark.parametrize("act", [nn.ReLU(), nn.Tanh(), nn.Sigmoid(), nn.GELU(), nn.GELU(approximate="tanh"),
                                 nn.LeakyReLU(0.2), nn.SiLU(), nn.ELU(0.7), nn.Softplus(beta=2.0, threshold=1.0)],
                         ids=lambda a: repr(a))
def test_activations_match_torch(act):
    torch.manual_seed(2)
    _compare(nn.Sequential(nn.Linear(7, 32), act, nn.Linear(32, 3)), (7,), n=32)


CONVS = {
    "pad1": dict(in_channels=3, out_channels=4, kernel_size=3, padding=1),
    "stride2-rect": dict(in_channels=3, out_channels=4, kernel_size=(3, 2), stride=(2, 1), padding=(1, 0)),
    "dilation2": dict(in_channels=3, out_channels=4, kernel_size=3, dilation=2, padding=2),
    "groups3-nobias": dict(in_channels=3, out_channels=6, kernel_size=3, groups=3, bias=False),
    "same-even": dict(in_channels=3, out_channels=4, kernel_size=4, padding="same", dilation=(1, 2)),
    "valid": dict(in_channels=3, out_channels=4, kernel_size=3, padding="valid"),
    "reflect": dict(in_channels=3, out_channels=4, kernel_size=3, padding=1, padding_mode="reflect"),
    "replicate": dict(in_channels=3, out_channels=4, kernel_size=3, padding=(2, 1), padding_mode="replicate"),
    "circular": dict(in_channels=3, out_channels=4, kernel_size=3, padding=1, padding_mode="circular"),
}


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("name", list(CONVS))
def test_conv2d_matches_torch(name):
    torch.manual_seed(3)
    conv = nn.Conv2d(**CONVS[name])
    net = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.LazyLinear(5))
    with torch.no_grad():
        net(torch.zeros(1, 3, 9, 10))  # materialise the lazy head
    net = nn.Sequential(*[m for m in net])  # LazyLinear became Linear
    assert type(net[3]) is nn.Linear
    _compare(net, (3, 9, 10))


def test_conv_net_with_pooling_and_dropout_matches_torch_eval():
    torch.manual_seed(4)
    net = nn.Sequential(
        nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),
                      nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1, dilation=1),
                      nn.Dropout2d(0.5)),
        nn.AvgPool2d(2, stride=1, padding=1, count_include_pad=False), nn.AvgPool2d(2, padding=1),
        nn.Flatten(), nn.Dropout(0.3), nn.Linear(8 * 2 * 2, 10),
    )
    net.train()  # a fresh module is in training mode: the conversion is its eval-mode function
    model = phaseprobe.from_torch(net)
    assert net.training, "from_torch must not change the torch module"
    _compare(net, (1, 8, 8))
    # global average pooling and a Flatten range that keeps the channel axis
    gap = nn.Sequential(nn.Conv2d(2, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(2, 3), nn.Flatten(), nn.Linear(4, 2))
    _compare(gap, (2, 7, 7))
    assert model is not None


BAD = {
    "features.3": (nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3), nn.BatchNorm2d(2)), "BatchNorm2d"),
    "head.1": (nn.Sequential(nn.Linear(4, 3), nn.Softmax(dim=-1)), "Softmax"),
    "head.2": (nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.LayerNorm(3)), "LayerNorm"),
    "head.0": (nn.Sequential(nn.LSTM(4, 3)), "LSTM"),
    "head.4": (nn.Sequential(nn.Flatten(), nn.Conv2d(1, 1, 1), nn.ReLU(), nn.Identity(), nn.MaxPool2d(2, ceil_mode=True)), "MaxPool2d"),
    "head.5": (nn.Sequential(*[nn.Identity()] * 5, nn.Flatten(0)), "Flatten"),
    "head.6": (nn.Sequential(*[nn.Identity()] * 6, nn.AdaptiveAvgPool2d(2)), "AdaptiveAvgPool2d"),
    "head.7": (nn.Sequential(*[nn.Identity()] * 7, nn.Linear(2, 2).half()), "Linear"),
}


class Net(nn.Module):
    """Not a chain of layers: an arithmetic step in forward."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(x) * 2


class TutorialNet(nn.Module):
    """The PyTorch tutorials' shape of a custom module (layers registered out of call order)."""

    def __init__(self):
        super().__init__()
        self.fc2 = nn.Linear(16, 10)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(4 * 4 * 4, 16)

    def forward(self, x):
        x = self.pool(F.relu(self.conv(x)))
        x = x.view(x.size(0), -1)
        x = torch.tanh(self.fc1(x))
        x = F.dropout(x, 0.3, training=self.training)
        return self.fc2(F.leaky_relu(x, 0.1))


class PooledNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.block = nn.Sequential(nn.Linear(4 * 2 * 2, 16), nn.GELU())
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x):
        x = self.pool(self.pool(torch.relu(self.conv(x))))
        x = torch.flatten(x, 1)
        return self.fc2(self.block(x).sigmoid())


class Residual(TutorialNet):
    def forward(self, x):
        x = torch.flatten(self.pool(self.conv(x)), 1)
        h = self.fc1(x)
        return self.fc2(h + torch.tanh(h))


class SharedWeights(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(5, 5)

    def forward(self, x):
        return self.fc1(torch.relu(self.fc1(x)))


class Branchy(TutorialNet):
    def forward(self, x):
        if x.sum() > 0:
            x = -x
        return self.fc2(self.fc1(torch.flatten(self.pool(self.conv(x)), 1)))


def test_custom_chain_module_matches_torch_and_round_trips():
    torch.manual_seed(8)
    for cls in (TutorialNet, PooledNet):
        net = cls()
        model = _compare(net, (1, 8, 8))
        twin = cls()
        state = phaseprobe.to_torch(model, twin)  # by name, though registered out of call order
        assert list(state) == list(net.state_dict())
        for k, v in net.state_dict().items():
            assert torch.equal(state[k], v), k
    assert model.names == ("conv", "<relu>", "pool", "pool", "<flatten>", "block.0", "block.1", "<sigmoid>", "fc2")


@pytest.mark.parametrize("cls, match", [
    (Residual, r"^model: layer '<module>' \(Residual\) computes 'add' \(add\), which from_torch cannot read; "),
    (SharedWeights, r"^model: layer 'fc1' \(Linear\) is called twice \(shared weights\); "),
    (Branchy, r"^model: layer '<module>' \(Branchy\) is a custom module whose forward cannot be traced \("),
])
def test_custom_modules_that_are_not_chains_are_refused(cls, match):
    torch.manual_seed(9)
    with pytest.raises(TorchModelError, match=match) as e:
        phaseprobe.from_torch(cls())
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("where", list(BAD))
def test_unsupported_layer_is_one_line_naming_it(where):
    seq, layer = BAD[where]
    outer = where.split(".")[0]
    net = nn.Sequential()
    net.add_module(outer, seq)
    with pytest.raises(TorchModelError) as e:
        phaseprobe.from_torch(net)
    msg = str(e.value)
    assert isinstance(e.value, PhaseprobeError)
    assert "\n" not in msg
    assert msg.startswith(f"model: layer '{where}' ({layer}) "), msg
    assert "; " in msg  # the fix follows


def test_custom_module_hooks_and_non_modules_are_refused():
    with pytest.raises(TorchModelError, match=r"^model: layer '<module>' \(Net\) computes 'mul' \(mul\), which from_torch cannot read; "):
        phaseprobe.from_torch(Net())
    net = nn.Sequential()
    net.add_module("body", Net())
    with pytest.raises(TorchModelError, match=r"^model: layer 'body' \(Net\)"):
        phaseprobe.from_torch(net)
    hooked = nn.Sequential(nn.Linear(3, 3))
    hooked[0].register_forward_hook(lambda m, i, o: o * 2)
    with pytest.raises(TorchModelError, match=r"^model: layer '0' \(Linear\) has forward hooks"):
        phaseprobe.from_torch(hooked)
    with pytest.raises(TorchModelError, match=r"^module: expected a torch.nn.Module"):
        phaseprobe.from_torch(np.zeros(3))


def _arch():
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Sequential(nn.Linear(4 * 4 * 4, 16), nn.ReLU()), nn.Linear(16, 3, bias=False))


def test_round_trip_gives_back_the_weights_exactly():
    torch.manual_seed(5)
    src = _arch()
    model = _compare(src, (1, 8, 8))
    torch.manual_seed(6)
    dst = _arch()
    assert not torch.equal(dst[0].weight, src[0].weight)
    state = phaseprobe.to_torch(model, dst)
    assert list(state) == list(src.state_dict())
    for k, v in src.state_dict().items():
        assert state[k].dtype == v.dtype and torch.equal(state[k], v), k
        assert torch.equal(dst.state_dict()[k], v), k  # loaded into the module too
    x = torch.randn(8, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(dst(x), src.eval()(x))
    again = phaseprobe.from_torch(dst)
    for a, b in zip(jax.tree_util.tree_leaves(model), jax.tree_util.tree_leaves(again)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_to_torch_refuses_mismatches_in_one_line():
    torch.manual_seed(7)
    model = phaseprobe.from_torch(_arch())
    wrong = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Sequential(nn.Linear(4 * 4 * 4, 12), nn.ReLU()), nn.Linear(12, 3, bias=False))
    before = {k: v.clone() for k, v in wrong.state_dict().items()}
    with pytest.raises(TorchModelError, match=r"^module: parameter '4\.0\.weight' has shape \(12, 64\) but the model's .* has \(16, 64\); ") as e:
        phaseprobe.to_torch(model, wrong)
    assert "\n" not in str(e.value)
    assert all(torch.equal(before[k], v) for k, v in wrong.state_dict().items()), "nothing is written on a mismatch"
    with pytest.raises(TorchModelError, match=r"^module: parameter '5\.bias' has no counterpart in the model \(which has 0\.weight, 0\.bias, .*, 5\.weight\); "):
        phaseprobe.to_torch(model, nn.Sequential(*_arch()[:-1], nn.Linear(16, 3)))
    with pytest.raises(TorchModelError, match=r"^module: has no parameter '4\.0\.bias', which the model has; "):
        phaseprobe.to_torch(model, nn.Sequential(*_arch()[:4], nn.Sequential(nn.Linear(64, 16, bias=False)), _arch()[5]))
    # a model that is not from from_torch (the project's MLP) is matched in order
    from phaseprobe.models import build_model

    mlp = build_model("mlp", (6,), 3, key=jax.random.PRNGKey(0), depth=1, width=4)
    with pytest.raises(TorchModelError, match=r"^module: has 2 parameter tensors but the model has 4; "):
        phaseprobe.to_torch(mlp, nn.Sequential(nn.Linear(6, 3)))
    stacked = jax.tree_util.tree_map(lambda a: jnp.stack([a, a]), model)
    with pytest.raises(TorchModelError, match=r"a stacked ensemble\? pass one member"):
        phaseprobe.to_torch(stacked, _arch())


def test_project_models_write_into_torch_modules():
    from phaseprobe.models import build_model

    key = jax.random.PRNGKey(0)
    conv = build_model("conv", (1, 8, 8), 10, key=key, channels=(4, 6), activation="tanh")
    tconv = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2),
                          nn.Conv2d(4, 6, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(6 * 2 * 2, 10))
    phaseprobe.to_torch(conv, tconv)
    x = np.random.default_rng(0).normal(size=(6, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(tconv(torch.from_numpy(x)).numpy(), np.asarray(jax.vmap(conv)(x)), atol=1e-5, rtol=1e-5)
    deep = build_model("linear", (5,), 3, key=key, depth=3, width=4)
    tdeep = nn.Sequential(nn.Linear(5, 4, bias=False), nn.Linear(4, 4, bias=False), nn.Linear(4, 3, bias=False))
    phaseprobe.to_torch(deep, tdeep)
    with torch.no_grad():
        np.testing.assert_allclose(tdeep(torch.from_numpy(x[:, 0, 0, :5].copy())).numpy(),
                                   np.asarray(jax.vmap(deep)(x[:, 0, 0, :5])), atol=1e-6, rtol=1e-5)


def test_stored_sweep_model_to_torch(tmp_path_factory):
    """A member of a stored sweep (open_run(DIR).model) written back as a torch state_dict."""
    run_dir, _ = tiny_sweep(tmp_path_factory.getbasetemp() / "views")
    run = phaseprobe.open_run(run_dir)
    model = run.model(branch="up", alpha_index=0, seed=0)
    net = nn.Sequential(nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 10))
    state = phaseprobe.to_torch(model, net)
    assert torch.equal(state["0.weight"], torch.from_numpy(np.array(model.layers[0].weight)))
    from phaseprobe.data import load_dataset

    data = load_dataset("digits", n_train=64, n_test=16)
    with torch.no_grad():
        got = net(torch.from_numpy(np.asarray(data.x_test, np.float32))).numpy()
    np.testing.assert_allclose(got, np.asarray(jax.vmap(model)(data.x_test)), atol=1e-5, rtol=1e-5)
    # ... and back: the converted torch module has the stored model's outputs and weights
    back = phaseprobe.from_torch(net)
    np.testing.assert_array_equal(np.asarray(back.layers[4].bias), np.asarray(model.layers[2].bias))


def _digits(n=200):
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.data[:n] / 16.0).astype(np.float32), d.target[:n].astype(np.int64)


def test_torch_trained_model_hessian_with_phaseprobe_lanczos():
    """Train in torch, convert, and compare phaseprobe's Lanczos top eigenvalue of E (and R_E)
    with torch's dense Hessian of the same mean cross-entropy."""
    x, y = _digits()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 8), nn.Tanh(), nn.Linear(8, 10))
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(30):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(xt), yt)
        loss.backward()
        opt.step()

    model = phaseprobe.from_torch(net)
    E = make_error_fn(model, (x, y), "ce")
    params = params_of(model)
    with torch.no_grad():
        e_torch = float(nn.functional.cross_entropy(net(xt), yt))
    assert abs(float(E(params)) - e_torch) <= 1e-6 * max(1.0, e_torch)

    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for p in net.parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in net.parameters()]).double()

    def torch_error(flat):
        out, i, ps = xt.double(), 0, {}
        for n, s in zip(names, shapes):
            k = int(np.prod(s))
            ps[n] = flat[i:i + k].reshape(s)
            i += k
        return nn.functional.cross_entropy(torch.func.functional_call(net.double(), ps, (out,)), yt)

    H = torch.autograd.functional.hessian(torch_error, flat0).numpy()
    g = torch.autograd.functional.jacobian(torch_error, flat0).numpy()
    net.float()
    eig = np.linalg.eigvalsh(H)
    res = lanczos(E, params, k=1, num_iter=80, key=jax.random.PRNGKey(0))
    assert abs(res.max_eig - eig[-1]) <= 1e-4 * abs(eig[-1]), (res.max_eig, eig[-1])
    # the flat parameter order of the converted model is torch's (weight, bias per layer)
    R = scalar_curvature(E, params, exact=True)
    R_torch = curvature_exact(g, H)
    assert abs(R.R - R_torch) <= 1e-5 * abs(R_torch), (R.R, R_torch)


def test_converted_model_trains_with_the_trainer():
    from phaseprobe.data import load_dataset
    from phaseprobe.train import Trainer, TrainConfig

    data = load_dataset("digits", n_train=128, n_test=32, flatten=False)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 10))
    model = phaseprobe.from_torch(net)
    stacked = jax.tree_util.tree_map(lambda a: a[None], model)
    tr = Trainer(stacked, data, TrainConfig(optimizer="adam", lr=0.02, epochs=20, batch_size=None))
    res = tr.train(stacked, jnp.array([1e-4]), key=jax.random.PRNGKey(0)[None], record_at=[1])
    first, last = res.records[0]["train_error"][0], res.records[-1]["train_error"][0]
    assert last < 0.7 * first, (first, last)

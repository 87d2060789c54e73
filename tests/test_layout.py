"""The channels-last layout of the book's networks (robustvae.models.CHANNELS_LAST) computes the
same functions as the default NCHW layout, written out here with functional ops on contiguous
tensors; old NCHW checkpoints load into it; torch.func transforms still run through it."""

import copy
import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F

from robustvae import models

ROOT = Path(__file__).resolve().parents[1]


def _nchw_classifier(m: models.Classifier, x: torch.Tensor) -> torch.Tensor:
    c1, c2 = m.features[0], m.features[3]
    h = F.max_pool2d(F.relu(F.conv2d(x, c1.weight.contiguous(), c1.bias, padding=1)), 2)
    h = F.max_pool2d(F.relu(F.conv2d(h, c2.weight.contiguous(), c2.bias, padding=1)), 2)
    l1, l2 = m.head[2], m.head[5]
    return F.linear(F.relu(F.linear(h.flatten(1), l1.weight, l1.bias)), l2.weight, l2.bias)


def _nchw_decoder(d: models.ConvDecoder, z: torch.Tensor) -> torch.Tensor:
    lin1, lin2, t1, t2 = d.body[0], d.body[2], d.body[5], d.body[7]
    h = F.relu(F.linear(F.relu(F.linear(z, lin1.weight, lin1.bias)), lin2.weight, lin2.bias))
    h = h.view(len(z), 2 * d.width, 7, 7)
    h = F.relu(F.conv_transpose2d(h, t1.weight.contiguous(), t1.bias, stride=2, padding=1))
    return F.conv_transpose2d(h, t2.weight.contiguous(), t2.bias, stride=2, padding=1)


def _nchw_encoder(e: models.ConvEncoder, x: torch.Tensor):
    c1, c2, lin = e.body[0], e.body[2], e.body[5]
    h = F.relu(F.conv2d(x, c1.weight.contiguous(), c1.bias, stride=2, padding=1))
    h = F.relu(F.conv2d(h, c2.weight.contiguous(), c2.bias, stride=2, padding=1))
    h = F.relu(F.linear(h.flatten(1), lin.weight, lin.bias))
    return e.mu(h), e.log_var(h).clamp(-12.0, 8.0)


def test_weights_are_channels_last_and_the_functions_are_the_nchw_ones():
    torch.manual_seed(0)
    clf, vae = models.Classifier().eval(), models.VAE(latent_dim=4).eval()
    for m in (clf, vae):
        convs = [p for p in m.parameters() if p.dim() == 4]
        assert convs and all(p.is_contiguous(memory_format=models.CHANNELS_LAST) for p in convs)
    x, z = torch.rand(7, 1, 28, 28), torch.randn(7, 4)
    with torch.no_grad():
        assert torch.allclose(clf(x), _nchw_classifier(clf, x), atol=1e-5)
        assert torch.allclose(vae.decode(z), _nchw_decoder(vae.decoder, z), atol=1e-5)
        for a, b in zip(vae.encode(x), _nchw_encoder(vae.encoder, x)):
            assert torch.allclose(a, b, atol=1e-5)
    # the input gradient (every attack's step) is the NCHW one too
    xr = x.clone().requires_grad_(True)
    y = torch.arange(7) % 10
    (g_new,) = torch.autograd.grad(F.cross_entropy(clf(xr), y), xr)
    xr = x.clone().requires_grad_(True)
    (g_old,) = torch.autograd.grad(F.cross_entropy(_nchw_classifier(clf, xr), y), xr)
    assert torch.allclose(g_new, g_old, atol=1e-6, rtol=1e-4)


def test_an_nchw_checkpoint_loads_into_the_channels_last_layout():
    torch.manual_seed(1)
    old = copy.deepcopy(models.Classifier()).to(memory_format=torch.contiguous_format).eval()
    assert old.features[0].weight.is_contiguous()
    new = models.Classifier().eval()
    new.load_state_dict(old.state_dict())
    assert new.features[3].weight.is_contiguous(memory_format=models.CHANNELS_LAST)
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(new(x), _nchw_classifier(old, x), atol=1e-5)


def test_torch_func_transforms_run_through_the_decoder():
    torch.manual_seed(2)
    vae = models.VAE(latent_dim=3).eval()
    z = torch.randn(2, 3)

    def g(zz):
        return vae.decode(zz).flatten(1)

    eye = torch.eye(3)
    cols = torch.func.vmap(lambda v: torch.func.jvp(g, (z,), (v.expand(2, 3),))[1])(eye)   # (3, 2, 784)
    jac = torch.autograd.functional.jacobian(lambda zz: _nchw_decoder(vae.decoder, zz[None]).flatten(), z[0])
    assert torch.allclose(cols[:, 0].T, jac, atol=1e-5)


def test_the_layout_benchmark_compares_equal_functions():
    spec = importlib.util.spec_from_file_location("bench_layout", ROOT / "benchmarks" / "bench_layout.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    work, probes = bench.workloads()
    assert set(work) == {"classifier forward, 300 digits", "classifier input gradient, 200 digits",
                         "classifier training, 5 steps of 64", "VAE decoder forward, 2000 latents",
                         "VAE ELBO input gradient, 200 digits", "VAE training, 5 steps of 64"}
    clf_old, clf_new = probes[0], probes[1]
    assert clf_old.features[3].weight.is_contiguous() and not clf_new.features[3].weight.is_contiguous()
    diffs = bench.agreement(*probes)
    assert max(diffs.values()) < 1e-4

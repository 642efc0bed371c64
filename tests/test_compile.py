"""`students.compile`: both students compiled in place, at a small size on the CPU."""

import pytest
import torch

from trainables.losses import students_loss
from trainables.methods import resolve_method
from trainables.models import build_model


def first_weight(model):
    return model.conv1.weight if hasattr(model, "conv1") else model.features[0][0].weight


@pytest.mark.slow  # compiling two networks takes 30 s to minutes on a small CPU
@pytest.mark.needs_cxx
def test_compiled_students_compute_as_the_eager_ones_and_keep_their_state_dict_keys():
    torch.manual_seed(0)
    eager = [build_model(arch, 10, 8) for arch in ("resnet18", "mobilenet_v2")]
    compiled = [build_model(arch, 10, 8) for arch in ("resnet18", "mobilenet_v2")]
    for e, c in zip(eager, compiled):
        for m in (e, c):  # no dropout draws, so both sides compute the same function
            for layer in m.modules():
                if isinstance(layer, torch.nn.Dropout):
                    layer.p = 0.0
        c.load_state_dict(e.state_dict())
        c.compile()  # what the loop does with students.compile: true
        assert list(c.state_dict()) == list(e.state_dict())  # checkpoints stay loadable either way
    images, labels, teacher = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,)), torch.randn(4, 10)
    settings = resolve_method(
        {
            "method": "ua_dual",
            "temperature": 4.0,
            "alpha": 0.5,
            "beta": 1.0,
            "weighting": "entropy",
            "threshold": None,
            "peer_weighting": "uniform",
        }
    )
    losses = []
    for models in (eager, compiled):  # training mode, as the loop runs them
        parts = students_loss([m(images) for m in models], labels, teacher, names=["a", "b"], **settings)
        parts["total"].backward()
        losses.append(parts["total"].detach())
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-4, atol=1e-4)
    for e, c in zip(eager, compiled):
        gc, ge = first_weight(c).grad, first_weight(e).grad  # fused kernels sum in another order: close, not equal
        assert (gc - ge).norm() < 1e-2 * ge.norm()

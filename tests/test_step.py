"""tsn_dali.engine.step.TrainStep: the one training step shared by train and bench."""
import pytest
import torch

from tsn_dali.engine.step import TrainStep, prepare_clips

MEAN, STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)


class Tiny(torch.nn.Module):
    """[N, V, C, H, W] -> logits: mean over views of a linear map of the pixels."""

    def __init__(self, classes=3, pixels=3 * 4 * 4):
        super().__init__()
        self.fc = torch.nn.Linear(pixels, classes)

    def forward(self, x):
        return self.fc(x.flatten(2)).mean(1)


def make(grad_clip=0.0, lr=1.0, momentum=0.0, weight_decay=0.0, amp="off"):
    torch.manual_seed(0)
    model = Tiny()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    return model, opt, TrainStep(model, opt, amp=amp, grad_clip=grad_clip, mean=MEAN, std=STD)


def batch(dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    clips = (torch.rand((2, 2, 3, 4, 4), generator=g) * 255).round()
    return clips.to(dtype), torch.tensor([0, 2])


def flat_params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def grad_norm(model, clips, labels, step):
    loss = step.forward(clips, labels)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    return float(torch.cat([g.flatten() for g in grads]).norm())


@pytest.mark.parametrize("clip", [0.0, 1e-3])
def test_update_moves_parameters_by_the_clipped_gradient(clip):
    model, _, step = make(grad_clip=clip)
    clips, labels = batch()
    norm = grad_norm(model, clips, labels, step)
    assert norm > 1e-2  # so that the 1e-3 clip below really clips
    before = flat_params(model)
    loss = step(clips, labels)
    moved = float((flat_params(model) - before).norm())  # lr 1, no momentum or decay: the gradient
    assert moved == pytest.approx(min(norm, clip) if clip else norm, rel=1e-4)
    assert not loss.requires_grad and loss.ndim == 0
    assert all(p.grad is None for p in model.parameters())  # dropped after the step


def test_skip_leaves_parameters_and_optimiser_state_alone():
    model, opt, step = make(momentum=0.9)
    clips, labels = batch()
    step(clips, labels)  # one real step: momentum buffers exist
    params, state = flat_params(model), {k: v["momentum_buffer"].clone() for k, v in opt.state.items()}
    step.forward(clips, labels).backward()
    step.skip()
    assert torch.equal(flat_params(model), params)
    assert all(torch.equal(opt.state[k]["momentum_buffer"], v) for k, v in state.items())
    assert all(p.grad is None for p in model.parameters())


def test_uint8_clips_are_normalised_as_float_clips_are():
    model, _, step = make()
    clips, labels = batch()
    normalised = prepare_clips(clips.to(torch.uint8), MEAN, STD, "off")
    expect = (clips - torch.tensor(MEAN).view(1, 1, 3, 1, 1)) / torch.tensor(STD).view(1, 1, 3, 1, 1)
    torch.testing.assert_close(normalised, expect)
    assert torch.equal(step.forward(clips.to(torch.uint8), labels), step.forward(expect, labels))


def test_half_input_is_widened_without_amp_and_kept_with_it():
    clips, _ = batch(torch.float16)
    assert prepare_clips(clips, MEAN, STD, "off").dtype == torch.float32
    assert prepare_clips(clips, MEAN, STD, "bf16").dtype == torch.float16


def test_unknown_amp_is_refused():
    model = Tiny()
    with pytest.raises(ValueError, match="amp 'fp8'"):
        TrainStep(model, torch.optim.SGD(model.parameters(), lr=0.1), amp="fp8", grad_clip=0,
                  mean=MEAN, std=STD)


def test_bench_measures_the_trainers_step():
    """The benchmark builds the same TrainStep, with the trainer's optimiser."""
    from tsn_dali.bench import make_train_step
    from tsn_dali.config import load_recipe
    from tsn_dali.engine.amp import resolve_amp

    recipe = load_recipe("demo.yaml")
    step = make_train_step(Tiny(), recipe, torch.device("cpu"))
    # train.amp: auto, resolved as the trainer resolves it (bf16 or off on a CPU)
    assert isinstance(step, TrainStep) and step.amp == resolve_amp("auto", "cpu").amp
    assert step.grad_clip == recipe.train.grad_clip
    group = step.optimizer.param_groups[0]
    assert group["momentum"] == recipe.train.momentum and group["weight_decay"] == recipe.train.weight_decay
    assert group.get("foreach") is True  # build_optimizer's CPU choice (fused on CUDA)


class TinyBN(torch.nn.Module):
    """Tiny with a batch norm: a training forward updates its running statistics."""

    def __init__(self):
        super().__init__()
        self.bn = torch.nn.BatchNorm2d(3)
        self.fc = torch.nn.Linear(3 * 4 * 4, 3)

    def forward(self, x):
        n, v = x.shape[:2]
        return self.fc(self.bn(x.flatten(0, 1)).flatten(1)).view(n, v, -1).mean(1)


@pytest.mark.parametrize("skippable", [True, False])
def test_a_skipped_step_leaves_batch_norm_statistics_as_they_were(skippable):
    torch.manual_seed(0)
    model = TinyBN().train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    step = TrainStep(model, opt, amp="off", grad_clip=0, mean=MEAN, std=STD, skippable=skippable)
    clips, labels = batch()
    step(clips, labels)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    step.forward(clips, labels)
    step.skip()
    same = all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # Without the buffer copy the running statistics moved: the check can fail.
    assert same is skippable
    step(clips, labels)  # a real step after a skip still updates them
    assert not torch.equal(before["bn.running_mean"], model.bn.running_mean)

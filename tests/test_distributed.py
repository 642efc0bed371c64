"""What N workers of one run agree on, checked with two real gloo processes (no Ray): the sharded
evaluation gives the one-process figures sample by sample, sums are over ranks, ranks agree on a step;
and the pure parts: the training order follows the run's seed, ranks split it without duplicates."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from trainables import distributed
from trainables.data import TensorImages
from trainables.loop import evaluate

WORLD = 2


def val_set(n: int = 37) -> TensorImages:
    """An odd-sized set of fixed images (37 does not divide among 2 ranks or into batches of 8)."""
    gen = torch.Generator().manual_seed(0)
    return TensorImages(torch.randn(n, 1, 8, 8, generator=gen), torch.randint(0, 5, (n,), generator=gen), False)


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 64, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 5))


def _worker(rank: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    net = model()
    for buffer in net.buffers():  # ranks' BatchNorm statistics differ, as after each rank's last training step
        if buffer.dtype.is_floating_point:
            buffer.add_(rank)
    distributed.share_rank0_buffers(net)
    data = val_set()
    shard = torch.utils.data.Subset(data, distributed.shard(len(data), rank, WORLD))
    loader = torch.utils.data.DataLoader(shard, batch_size=8)
    metrics, predictions = evaluate({"net": net}, loader, "cpu", torch.autocast("cpu", enabled=False), teacher=net)
    sums = distributed.sum_over_ranks({"images": len(shard), "rank": torch.tensor(float(rank))}, "cpu")
    agreed = [distributed.all_ranks_have(True, "cpu"), distributed.all_ranks_have(rank == 0, "cpu")]
    torch.save({"metrics": metrics, "predictions": predictions, "sums": sums, "agreed": agreed}, f"{out}.{rank}")
    dist.destroy_process_group()


def test_sharded_evaluation_equals_one_process_to_the_last_sample(tmp_path):
    mp.spawn(_worker, args=(f"file://{tmp_path / 'rendezvous'}", str(tmp_path / "out")), nprocs=WORLD)
    ranks = [torch.load(tmp_path / f"out.{r}", weights_only=False) for r in range(WORLD)]

    data = val_set()
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    metrics, predictions = evaluate(
        {"net": model()}, loader, "cpu", torch.autocast("cpu", enabled=False), teacher=model().eval()
    )  # a frozen teacher is in eval mode
    net = predictions["net"]
    assert torch.equal(net["predicted"] == predictions["labels"], net["correct"].bool())  # the class behind top-1
    for got in ranks:  # every rank holds the whole set's figures, in the set's order, no sample twice
        assert torch.equal(got["predictions"]["labels"], predictions["labels"])
        assert torch.equal(got["predictions"]["net"]["correct"], predictions["net"]["correct"])
        assert torch.equal(got["predictions"]["net"]["predicted"], predictions["net"]["predicted"])
        torch.testing.assert_close(got["predictions"]["net"]["confidence"], predictions["net"]["confidence"])
        torch.testing.assert_close(got["predictions"]["teacher_logits"], predictions["teacher_logits"])
        assert got["metrics"].keys() == metrics.keys()
        for key, value in metrics.items():
            assert math.isclose(got["metrics"][key], value, rel_tol=1e-6, abs_tol=1e-7), key
        assert got["sums"] == {"images": len(data), "rank": 1.0}
        assert got["agreed"] == [True, False]


def test_training_order_follows_the_run_seed_and_ranks_split_it_without_duplicates():
    data = list(range(103))

    def order(seed: int, epoch: int, world: int) -> list[list[int]]:
        samplers = [distributed.train_sampler(data, seed, rank, world) for rank in range(world)]
        for s in samplers:
            s.set_epoch(epoch)
        return [list(s) for s in samplers]

    two = order(0, 0, 2)
    assert len(two[0]) == len(two[1]) == 51 and not set(two[0]) & set(two[1])  # the odd tail left out, no padding
    assert order(0, 0, 2) == two  # the same seed, the same order
    assert order(1, 0, 2) != two and order(0, 1, 2) != two  # another seed or epoch, another order
    assert order(1, 0, 2) != order(0, 1, 2)  # seed s + 1 is no shifted copy of seed s's next epoch
    assert sorted(order(0, 0, 1)[0]) == data  # one worker: a plain shuffle of everything


def test_rank_seeds_are_distinct_across_seeds_and_ranks():
    seeds = {distributed.mixed_seed(seed, rank) for seed in range(4) for rank in range(4)}
    assert len(seeds) == 16 and all(0 <= s < 2**63 for s in seeds)


@pytest.mark.parametrize("flags,expected", [([True], True), ([False], False)])
def test_agreement_without_a_process_group_is_the_local_flag(flags, expected):
    assert distributed.all_ranks_have(flags[0], "cpu") is expected
    assert distributed.gather("x") == ["x"]


def _compiled_ddp_worker(rank: int, init: str, out: str) -> None:
    from torch.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    data = val_set()
    images = data.images[rank::WORLD].repeat(1, 3, 1, 1)
    labels = data.labels[rank::WORLD]
    grads = []
    for compiled in (False, True):
        net = DDP(model())
        if compiled:
            net.compile()  # what the loop does with students.compile: after the DDP wrap
        nn.functional.cross_entropy(net(images), labels).backward()
        grads.append([p.grad.clone() for p in net.module.parameters()])
        assert list(net.module.state_dict()) == list(model().state_dict())  # checkpoints keep their keys
    torch.save(grads, f"{out}.{rank}")
    dist.destroy_process_group()


@pytest.mark.slow  # compiling takes tens of seconds on a small CPU
@pytest.mark.needs_cxx
def test_students_compiled_after_the_ddp_wrap_average_the_same_gradients(tmp_path):
    mp.spawn(_compiled_ddp_worker, args=(f"file://{tmp_path / 'rendezvous'}", str(tmp_path / "out")), nprocs=WORLD)
    ranks = [torch.load(tmp_path / f"out.{r}", weights_only=True) for r in range(WORLD)]
    for eager, compiled in ranks:
        for e, c in zip(eager, compiled):
            torch.testing.assert_close(c, e, rtol=1e-4, atol=1e-5)
    for e0, e1 in zip(ranks[0][0], ranks[1][0]):  # DDP averaged over both ranks' different shards
        assert torch.equal(e0, e1)

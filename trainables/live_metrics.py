"""Live training figures as Ray metrics: the Ray dashboard's Metrics view and Prometheus/Grafana show
each run (a sweep's trial, or a single run) while it trains, before MLflow sees the epoch's end.

Ray exports them from every node's metrics agent with a `ray_` prefix (`ray_dualkd_val_top1`), each
tagged with the run's name; docker/grafana/dashboards/ has a dashboard of them.
"""

from __future__ import annotations

from ray.util.metrics import Gauge


class LiveMetrics:
    """The gauges of one training run; rank 0 sets them (images/s counts every worker)."""

    def __init__(self, run: str):
        self.tags = {"run": run}
        self.epoch = Gauge("dualkd_epoch", "epochs finished", tag_keys=("run",))
        self.images = Gauge("dualkd_images_per_second", "training images per second, all workers", tag_keys=("run",))
        self.top1 = Gauge("dualkd_val_top1", "validation top-1 after the last epoch", tag_keys=("run", "student"))
        self.loss = Gauge(
            "dualkd_train_loss", "mean training loss term over the last epoch", tag_keys=("run", "student", "term")
        )
        self.teacher_weight = Gauge(
            "dualkd_teacher_weight", "mean certainty weight w of the teacher", tag_keys=("run",)
        )

    def throughput(self, images_per_second: float) -> None:
        self.images.set(images_per_second, tags=self.tags)

    def end_of_epoch(self, metrics: dict) -> None:
        """An epoch's report: `epoch`, `<student>/val_top1`, `<student>/train_<term>`, `teacher_weight`."""
        self.epoch.set(metrics["epoch"], tags=self.tags)
        self.throughput(metrics["images_per_s"])
        if "teacher_weight" in metrics:
            self.teacher_weight.set(metrics["teacher_weight"], tags=self.tags)
        for key, value in metrics.items():
            student, _, name = key.partition("/")
            if name == "val_top1" and student != "teacher":
                self.top1.set(value, tags={**self.tags, "student": student})
            elif name.startswith("train_"):
                self.loss.set(value, tags={**self.tags, "student": student, "term": name.removeprefix("train_")})

"""The `search` section as Optuna distributions: what the sweep's searcher samples. Optuna is imported when the
space is built, not when the spec is read.
"""

from __future__ import annotations

from orchestrator.spec.schema import FloatParam, IntParam, Spec


def optuna_space(spec: Spec) -> dict:
    """The `search` section as Optuna distributions, keyed by dotted setting names."""
    import optuna.distributions as d

    space = {}
    for key, p in spec.search.items():
        if isinstance(p, FloatParam):
            space[key] = d.FloatDistribution(p.low, p.high, log=p.log)
        elif isinstance(p, IntParam):
            space[key] = d.IntDistribution(p.low, p.high, log=p.log, step=p.step)
        else:
            space[key] = d.CategoricalDistribution(p.choices)
    return space

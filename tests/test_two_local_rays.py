"""A sweep's local Ray beside another Ray instance on the same machine (a second sweep, a test's Ray).

Ray Train's placement-group cleaner asks Ray's state API with no address from inside the cluster; with
two instances on the machine that call failed ("Found multiple active Ray instances"), the cleaner died,
and a trial that ASHA stopped kept its workers' CPUs: the next trial waited forever (seen in the
rehearsal of the paper's spec under CI). `start_ray` names its own state API for every process it starts.
"""

import subprocess
import sys

import pytest

from tests.servers import base_env

PROBE = """
import ray
from orchestrator.execution import start_ray
start_ray(None, driver_slots=1)

@ray.remote
def ask_state_api():
    from ray.util.state import list_nodes
    return len(list_nodes())  # no address: what Ray Train's placement-group cleaner does

print("nodes", ray.get(ask_state_api.remote()))
"""


@pytest.mark.slow
def test_the_state_api_answers_inside_a_local_ray_beside_another(ray_local, tmp_path):
    assert ray_local.is_initialized()  # the other instance: this test session's own Ray
    env = {k: v for k, v in base_env().items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "nodes 1" in proc.stdout

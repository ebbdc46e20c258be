"""`--engine ray` on a cluster of two Ray nodes on this machine (``ray.cluster_utils.Cluster``): a node that
dies mid-scan, with the scoring actor, record tasks, archive listings and the blocks in its object
store, costs no row. Slow tier: starting nodes takes a while on two cores.
"""

from __future__ import annotations

import faulthandler
import io
import tarfile
import zipfile

import pytest
from conftest import assert_same_rows, png_bytes, random_image

import forensix
from forensix.inputs import InputSpec
from forensix.pipeline import Scanner, ScanOptions
from forensix.ray_options import RayOptions

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

# A lost node is noticed within about a second, not Ray's default 15 s.
FAST_HEALTH_CHECKS = {
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 300,
    "health_check_failure_threshold": 3,
}
WATCHDOG_S = 600  # a scan that hangs ends the test run, with every thread's stack, rather than CI's hour


@pytest.fixture
def inputs(tmp_path) -> InputSpec:
    """60 images in a folder, a zip and a tar.gz of 8 each: many blocks of 4, and listings to lose."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(60):
        random_image(24 + i % 9, 20 + i % 7, seed=i).save(photos / f"{i:03d}.png")
    members = {f"m/{i}.png": png_bytes(random_image(30, 22 + i, seed=500 + i)) for i in range(8)}
    with zipfile.ZipFile(tmp_path / "set.zip", "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    with tarfile.open(tmp_path / "set.tar.gz", "w:gz") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return InputSpec.from_args([str(photos), str(tmp_path / "set.zip"), str(tmp_path / "set.tar.gz")])


@pytest.mark.slow
def test_a_node_that_dies_mid_scan_costs_no_row(inputs, small_input_weights):
    detector = forensix.load_detector(weights=small_input_weights, device="cpu")
    want = list(Scanner(inputs, detector, ScanOptions(workers=1, batch_size=4)))
    # The head runs the driver's share (the read task, the ledger: no CPU); the worker node all the rest.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "_system_config": FAST_HEALTH_CHECKS})
    doomed = cluster.add_node(num_cpus=3)
    faulthandler.dump_traceback_later(WATCHDOG_S, exit=True)
    try:
        ray.init(address=cluster.address, logging_level="ERROR")
        rows = iter(Scanner(inputs, detector, ScanOptions(batch_size=4, ray=RayOptions(block_size=4))))
        got = [next(rows)]  # running: the actor, record tasks and blocks on the worker node
        cluster.remove_node(doomed, allow_graceful=False)
        cluster.add_node(num_cpus=3)
        got += list(rows)
    finally:
        faulthandler.cancel_dump_traceback_later()
        ray.shutdown()
        cluster.shutdown()
    assert len(want) == 60 + 8 + 8
    assert_same_rows(got, want)

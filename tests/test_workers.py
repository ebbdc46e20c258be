"""Forked loader workers must not collect the parent's garbage: its destructors belong to the parent."""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from forensix.workers import ProcessDied, ProcessTimedOut, WorkerLoader, run_alone, worker_died, worker_time_limit


class CollectingDataset(Dataset):
    """Each item runs a full collection in the worker, as any allocation there may."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> int:
        gc.collect()
        return os.getpid()


class Cycle:
    """Garbage only the cycle collector frees; records in ``log`` the process its destructor ran in."""

    def __init__(self, log: Path) -> None:
        self.me, self.log = self, log

    def __del__(self) -> None:
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()}\n")


def test_garbage_of_the_parent_is_collected_in_the_parent_only(tmp_path):
    log = tmp_path / "freed"
    log.touch()
    gc.disable()  # keep the cycle alive until the loader starts, whatever the test run allocated
    try:
        Cycle(log)
        pids = [int(p) for p in WorkerLoader(CollectingDataset(), batch_size=1, num_workers=2, timeout=60)]
    finally:
        gc.enable()
    assert os.getpid() not in pids  # the items were made in workers
    assert log.read_text().split() == [str(os.getpid())]


def test_workers_start_beside_an_onnxruntime_session_in_a_reference_cycle(tmp_path):
    """The hang seen in the suite: a worker's collection freed an onnxruntime session whose thread
    pool lives only in the parent and blocked in pthread_cond_destroy for good."""
    ort = pytest.importorskip("onnxruntime")
    model = torch.nn.Linear(4, 2)
    torch.onnx.export(model, (torch.zeros(1, 4),), tmp_path / "m.onnx", dynamo=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2  # a pool thread beside the caller's
    gc.disable()
    try:
        holder: dict = {"session": ort.InferenceSession(str(tmp_path / "m.onnx"), options)}
        holder["self"] = holder
        holder["session"].run(None, {holder["session"].get_inputs()[0].name: torch.zeros(1, 4).numpy()})
        del holder
        time.sleep(0.5)  # the pool thread stops spinning and waits on its condition variable
        loader = WorkerLoader(CollectingDataset(), batch_size=1, num_workers=2, timeout=60)
        assert len(list(loader)) == 4  # a hung worker raises after the timeout instead
    finally:
        gc.enable()


class GatedDataset(Dataset):
    """One item, made only when the parent says so: the worker writes to ``started``, then waits on ``go``."""

    def __init__(self) -> None:
        self.started, self.started_w = os.pipe()
        self.go_r, self.go = os.pipe()

    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> torch.Tensor:
        os.write(self.started_w, b"s")
        os.read(self.go_r, 1)
        return torch.full((8,), float(i))


def test_ctrl_c_while_a_batch_is_on_its_way_arrives_once_it_is_received_whole():
    """A KeyboardInterrupt inside the receiving of a worker's batch cut the fd handshake with the
    worker (whose sharing thread then printed a traceback) or left a torch object half built."""
    data = GatedDataset()
    batches = iter(WorkerLoader(data, batch_size=1, num_workers=1, timeout=60))
    events: list[str] = []
    raised = threading.Event()

    def interrupt_then_release() -> None:
        os.read(data.started, 1)  # the worker is making the batch: the main thread waits in next()
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        events.append("SIGINT sent")
        raised.wait(1.0)  # an interrupt that is not held off is raised meanwhile
        events.append("batch released")
        os.write(data.go, b"g")

    helper = threading.Thread(target=interrupt_then_release)
    helper.start()
    with pytest.raises(KeyboardInterrupt):
        next(batches)
    events.append("KeyboardInterrupt")
    raised.set()
    helper.join(timeout=60)
    for fd in (data.started, data.started_w, data.go_r, data.go):
        os.close(fd)
    assert events == ["SIGINT sent", "batch released", "KeyboardInterrupt"]  # held until the batch was in
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers fork on Linux only")
def test_workers_fork_on_linux_whatever_pythons_default():
    loader = WorkerLoader(CollectingDataset(), batch_size=1, num_workers=2)
    assert loader.multiprocessing_context.get_start_method() == "fork"


def test_without_workers_it_is_a_plain_loader():
    assert [int(b) for b in WorkerLoader(list(range(3)), batch_size=1)] == [0, 1, 2]
    ours = list(WorkerLoader(CollectingDataset(), batch_size=3))
    plain = list(DataLoader(CollectingDataset(), batch_size=3))
    assert [b.tolist() for b in ours] == [b.tolist() for b in plain] == [[os.getpid()] * 3, [os.getpid()]]


def _tensor_of(n: int) -> torch.Tensor:
    return torch.arange(n, dtype=torch.float32)


def _fail(message: str) -> None:
    raise ValueError(message)


def _die(signum: int) -> None:
    os.kill(os.getpid(), signum)


def test_run_alone_hands_back_the_result_or_says_how_the_process_ended():
    assert torch.equal(run_alone(_tensor_of, 5), torch.arange(5.0))  # tensors come back by value
    with pytest.raises(ValueError, match="bad input"):
        run_alone(_fail, "bad input")
    with pytest.raises(ProcessDied, match="killed by SIGKILL"):
        run_alone(_die, signal.SIGKILL)
    with pytest.raises(ProcessDied, match="exit status 3"):
        run_alone(os._exit, 3)


def test_run_alone_stops_a_process_still_running_at_its_time_limit():
    started = time.perf_counter()
    with pytest.raises(ProcessTimedOut, match="stopped after 0.5 s"):
        run_alone(time.sleep, 60, timeout=0.5)
    assert time.perf_counter() - started < 5
    assert run_alone(_tensor_of, 2, timeout=30).tolist() == [0.0, 1.0]


class SpinsOn(Dataset):
    """Item i is i, except item ``stuck``, which spins for 30 s of CPU time under the worker's hard time
    limit of 0.3 s, as a decoder stuck in C would."""

    def __init__(self, stuck: int) -> None:
        self.stuck = stuck

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> int:
        with worker_time_limit(0.3):
            if i == self.stuck:
                end = time.process_time() + 30
                while time.process_time() < end:
                    pass
        return i


def test_a_worker_stuck_on_one_item_is_killed_at_its_hard_limit_and_nowhere_else():
    started = time.perf_counter()
    loader = iter(WorkerLoader(SpinsOn(stuck=2), batch_size=1, num_workers=1))
    assert [next(loader).item(), next(loader).item()] == [0, 1]
    with pytest.raises(RuntimeError) as died:
        next(loader)
    assert worker_died(died.value) and time.perf_counter() - started < 20
    with worker_time_limit(0.01):  # in the main process: never killed
        end = time.process_time() + 0.1
        while time.process_time() < end:
            pass
    assert signal.getitimer(signal.ITIMER_PROF) == (0.0, 0.0)


def test_a_worker_s_death_is_told_from_other_loader_errors():
    assert worker_died(RuntimeError("DataLoader worker (pid(s) 123) exited unexpectedly"))
    assert worker_died(RuntimeError("DataLoader worker (pid 123) is killed by signal: Killed."))
    assert worker_died(ConnectionResetError(104, "Connection reset by peer")) and worker_died(EOFError())
    assert not worker_died(RuntimeError("stack expects each tensor to be equal size"))
    assert not worker_died(ValueError("DataLoader worker (pid 1)"))


def test_torch_s_sigchld_handler_is_kept_out():
    """torch's handler raises a dead worker's error wherever the main thread is; a scan recovers only
    from an error raised by next() (forensix.pipeline.Scanner.blocks)."""
    assert len(list(WorkerLoader(CollectingDataset(), batch_size=1, num_workers=1))) == 4
    handler = signal.getsignal(signal.SIGCHLD)
    assert not (callable(handler) and handler.__module__.startswith("torch")), handler

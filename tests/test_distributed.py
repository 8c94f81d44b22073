"""Series on Dask (nbxp/distributed.py): real clusters on 127.0.0.1 (``dask scheduler`` and
two ``dask worker`` processes, and ``--workers 2``'s LocalCluster); every frame equal to the
serial run's byte for byte, a killed worker, a killed client and --resume, a frame that fails,
NeXus as per-frame files under a virtual-dataset master (h5py and DIALS read it)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

import nbxp  # noqa: E402
from nbxp import distributed as nd  # noqa: E402
from nbxp.io import manifest as mf  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT) + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH")
                                               else ""))

LIGHT = ("-cell 70 80 90 75 85 95 -default_F 100 -N 4 -lambda 1 -distance 100 -detpixels 64 -pixel 0.2 "
         "-oversample 2 -mosaic 0.5 -mosaic_dom 8 -phisteps 4 -osc 1 -seed 5 -nopgm -noprogress").split()
#: ~0.2 s a frame on one thread here: slow enough to kill something mid-frame
HEAVY = ("-cell 70 80 90 75 85 95 -default_F 100 -N 4 -lambda 1 -distance 100 -detpixels 96 -pixel 0.2 "
         "-oversample 4 -mosaic 0.5 -mosaic_dom 25 -phisteps 5 -osc 1 -seed 5 -nopgm -noprogress").split()
FILES = ["-floatfile", "f_##.bin", "-intfile", "i_##.img", "-noisefile", "n_##.cbf"]
N = 20


def nbxp_cmd(args, cwd, **kw):
    return subprocess.run([sys.executable, "-m", "nbxp", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=240, env=ENV, **kw)


def names(n=N):
    return [f"{s}_{i:02d}.{e}" for i in range(1, n + 1) for s, e in (("f", "bin"), ("i", "img"), ("n", "cbf"))]


def same_files(a: Path, b: Path, files):
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f


def no_temporaries(d: Path):
    return [p for p in os.listdir(d) if p.startswith(".")] == []


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """`dask scheduler` and two `dask worker` processes (one task slot each) on 127.0.0.1,
    importing this tree; yields (scheduler file, client)."""
    d = tmp_path_factory.mktemp("cluster")
    sf = str(d / "scheduler.json")
    # `dask scheduler` / `dask worker`, run as modules of this interpreter (no PATH lookup)
    quiet = {"env": ENV, "cwd": d, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                               "--port", "0", "--no-dashboard", "--scheduler-file", sf], **quiet)]
    try:
        for _ in range(600):
            if os.path.exists(sf) and os.path.getsize(sf) > 0:
                break
            time.sleep(0.05)
        for _ in range(2):
            procs.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file", sf,
                                           "--nthreads", "1", "--nworkers", "1", "--no-dashboard", "--host",
                                           "127.0.0.1"], **quiet))
        client = distributed.Client(scheduler_file=sf, timeout="60s")
        client.wait_for_workers(2, timeout=90)
        assert set(client.run(lambda: nbxp.__file__).values()) == {str(ROOT / "nbxp" / "__init__.py")}
        yield sf, client
        client.shutdown()  # scheduler and workers (their nannies too) close at once
    finally:
        for p in procs[::-1]:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    """The serial run's files (no Dask), for the light and the heavy series."""
    out = {}
    for name, args in (("light", LIGHT + ["--truth", "truth.expt"]), ("heavy", HEAVY)):
        d = tmp_path_factory.mktemp("serial_" + name)
        p = nbxp_cmd(args + FILES + ["--frames", str(N)], d)
        assert p.returncode == 0, p.stderr
        out[name] = d
    return out


# ---------------------------------------------------------------- bit-identical frames

def test_scheduler_and_local_workers_equal_the_serial_run(dask_cluster, serial, tmp_path):
    sf, client = dask_cluster
    for how in (["--scheduler", sf], ["--workers", "2", "--threads", "1"]):
        d = tmp_path / how[0].strip("-")
        d.mkdir()
        p = nbxp_cmd(LIGHT + FILES + ["--frames", str(N), "--truth", "truth.expt"] + how, d)
        assert p.returncode == 0, p.stderr
        assert "Traceback" not in p.stderr
        assert "dask: scheduler tcp://127.0.0.1:" in p.stdout and "2 workers" in p.stdout
        assert sum(line.startswith("frame ") for line in p.stdout.splitlines()) == N
        same_files(serial["light"], d, names() + ["truth.expt"])
        assert no_temporaries(d)
        lines = nd.manifest_lines(str(d / "f.manifest.jsonl"))
        assert lines[0]["count"] == N and sorted(e["index"] for e in lines[1:]) == list(range(N))
        for e in lines[1:]:
            for path, digest, size in e["files"]:
                assert mf.sha256_file(str(d / path)) == digest and (d / path).stat().st_size == size
        assert len({e["pid"] for e in lines[1:]}) == 2  # both workers rendered frames


@pytest.mark.slow
def test_nexus_master_over_frame_files(dask_cluster, tmp_path):
    """NeXus on Dask: per-frame data files and a master whose /entry/data/data is a virtual
    dataset; h5py reads the same frames as the serial single file; DIALS imports one scan."""
    h5py = pytest.importorskip("h5py")
    sf, _ = dask_cluster
    args = LIGHT + ["--frames", "6", "-noisefile", "scan.h5", "-floatfile", "float.nxs", "-intfile", "i_#.img"]
    a, b = tmp_path / "serial", tmp_path / "dask"
    a.mkdir(), b.mkdir()
    assert nbxp_cmd(args, a).returncode == 0
    p = nbxp_cmd(args + ["--scheduler", sf], b)
    assert p.returncode == 0, p.stderr
    assert sorted(x for x in os.listdir(b) if "data_" in x) == sorted(
        [f"scan_data_{i:06d}.h5" for i in range(1, 7)] + [f"float_data_{i:06d}.nxs" for i in range(1, 7)])
    for name in ("scan.h5", "float.nxs"):
        with h5py.File(a / name, "r") as fa, h5py.File(b / name, "r") as fb:
            da, db = fa["/entry/data/data"], fb["/entry/data/data"]
            assert db.is_virtual and db.shape == da.shape == (6, 64, 64) and db.dtype == da.dtype
            assert da[()].max() > 0
            np.testing.assert_array_equal(db[()], da[()])
            # the rest of the layout is the single file's
            for key in ("/entry/instrument/detector/distance", "/entry/sample/transformations/omega"):
                np.testing.assert_array_equal(fb[key][()], fa[key][()])
    # moved as a directory, the master still finds its frames (sources are relative)
    moved = tmp_path / "moved"
    shutil.copytree(b, moved)
    shutil.rmtree(b)
    with h5py.File(moved / "scan.h5", "r") as f:
        assert f["/entry/data/data"][3].sum() > 0
    if shutil.which("dials.import"):
        q = subprocess.run(["dials.import", str(moved / "scan.h5"), "output.experiments=imported.expt"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=180)
        assert q.returncode == 0, q.stdout + q.stderr
        assert "num images: 6" in q.stdout and "sweep:    1" in q.stdout
        # and dxtbx reads the counts of a frame through the virtual dataset
        code = ("import dxtbx,sys; f=dxtbx.load(sys.argv[1]); d=f.get_raw_data(3); "
                "d=d[0] if isinstance(d,tuple) else d; print(int(d.as_numpy_array().sum()))")
        r = subprocess.run(["/usr/bin/python3", "-c", code, str(moved / "scan.h5")], capture_output=True, text=True,
                           timeout=120)
        with h5py.File(a / "scan.h5", "r") as f:
            want = int(f["/entry/data/data"][3].astype(np.int64).sum())
        assert r.returncode == 0 and int(r.stdout.split()[-1]) == want, r.stderr


# ---------------------------------------------------------------- faults

def test_a_killed_worker_loses_no_frame(dask_cluster, serial, tmp_path, monkeypatch):
    """SIGKILL one worker process while it renders: Dask reruns its frames elsewhere; every
    frame is present once and equals the serial run's; no temporary file is left."""
    sf, client = dask_cluster
    monkeypatch.chdir(tmp_path)
    pids = client.run(os.getpid)
    killed = {}

    def on_record(_, rec):
        if killed:
            return
        busy = {w: ks for w, ks in client.processing().items() if ks}
        if not busy:
            return
        w = sorted(busy)[0]
        killed.update(pid=pids[w], address=w, frames=[k for k in busy[w]])
        os.kill(pids[w], signal.SIGKILL)

    cfg = nbxp.config_from_args(HEAVY)
    outs = dict(zip(FILES[::2], FILES[1::2]))
    recs = nd.simulate_series(cfg, frames=N, client=client, outputs=outs, on_record=on_record, threads=1)
    assert killed, "no worker was busy when the first frame came back"
    with pytest.raises(ProcessLookupError):
        os.kill(killed["pid"], 0)  # it really died
    assert [r["index"] for r in recs] == list(range(N))  # every frame once
    # the frames the killed worker held were rendered by another process
    held = {int(str(k).rsplit("-", 2)[-2]) for k in killed["frames"]}
    assert held and all(recs[i]["pid"] != killed["pid"] for i in held)
    same_files(serial["heavy"], tmp_path, names())
    lines = nd.manifest_lines("f.manifest.jsonl")
    assert sorted(e["index"] for e in lines[1:]) == list(range(N))
    assert no_temporaries(tmp_path)
    client.wait_for_workers(2, timeout=60)  # the nanny brought it back


def test_resume_after_the_client_is_killed(dask_cluster, serial, tmp_path):
    """Kill the client process partway (SIGKILL), spoil one finished frame's file, resume:
    only the missing and spoiled frames are rendered, and the set equals the serial run."""
    sf, client = dask_cluster
    client.wait_for_workers(2, timeout=60)
    args = HEAVY + FILES + ["--frames", str(N), "--scheduler", sf]
    man = tmp_path / "f.manifest.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "nbxp", *args], cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if man.exists() and len(man.read_bytes().splitlines()) >= 1 + 4:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    done = [e["index"] for e in nd.manifest_lines(str(man))[1:]]
    assert 4 <= len(done) < N, f"{len(done)} frames done before the kill"
    spoiled = done[0]
    with open(tmp_path / f"i_{spoiled + 1:02d}.img", "r+b") as fh:  # one byte changed, same size
        fh.seek(600)
        b = fh.read(1)
        fh.seek(600)
        fh.write(bytes([b[0] ^ 1]))
    time.sleep(0.5)  # the dead client's frames in flight end on the workers
    p = nbxp_cmd(args + ["--resume"], tmp_path)
    assert p.returncode == 0, p.stderr
    m = [x for x in p.stdout.splitlines() if x.startswith("manifest:")][0]
    assert f"({len(done) - 1} of {N} frames complete, skipped; 1 listed but missing or changed on disk" in m
    rendered = [int(x.split()[1].split("/")[0]) - 1 for x in p.stdout.splitlines() if x.startswith("frame ")]
    assert sorted(rendered) == sorted(set(range(N)) - set(done) | {spoiled})
    same_files(serial["heavy"], tmp_path, names())
    assert no_temporaries(tmp_path)
    header, entries = mf.read(str(man))
    assert sorted(entries) == list(range(N)) and all(mf.entry_is_complete(e, str(tmp_path)) for e in entries.values())


def test_a_failing_frame_stops_the_series_cleanly(dask_cluster, tmp_path, monkeypatch, capsys):
    """Frame 8's float file cannot be written (a directory has its name): one error line
    naming the frame, the flag and the file; the manifest lists exactly the complete frames."""
    from nbxp import cli
    sf, client = dask_cluster
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f_08.bin").mkdir()
    rc = cli.main(LIGHT + FILES + ["--frames", str(N), "--scheduler", sf])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("nbxp: error: frame 8: -floatfile: cannot write "), err
    assert err[0].split()[7] == str(tmp_path / "f_08.bin") + ":", err  # the worker's (absolute) name
    header, entries = mf.read("f.manifest.jsonl")
    assert 7 not in entries and entries and all(mf.entry_is_complete(e, str(tmp_path)) for e in entries.values())
    assert not (tmp_path / "i_08.img").exists() and not (tmp_path / "n_08.cbf").exists()
    # every frame file on disk belongs to a recorded frame: nothing unaccounted for
    listed = {f[0] for e in entries.values() for f in e["files"]}
    on_disk = {x for x in os.listdir(tmp_path) if x.endswith((".bin", ".img", ".cbf")) and (tmp_path / x).is_file()}
    assert on_disk == listed
    assert no_temporaries(tmp_path)
    # with the obstacle gone, --resume completes the series
    (tmp_path / "f_08.bin").rmdir()
    assert cli.main(LIGHT + FILES + ["--frames", str(N), "--scheduler", sf, "--resume"]) == 0
    assert {x for x in os.listdir(tmp_path) if x.endswith((".bin", ".img", ".cbf"))} == set(names())


def test_resume_in_one_process(serial, tmp_path, monkeypatch, capsys):
    """--resume without a cluster renders the missing frames here (and writes the manifest)."""
    from nbxp import cli
    monkeypatch.chdir(tmp_path)
    args = LIGHT + FILES + ["--frames", "5", "--resume"]
    assert cli.run(args) == 0
    os.unlink("n_03.cbf")
    capsys.readouterr()
    assert cli.run(args) == 0
    out = capsys.readouterr().out
    assert "(4 of 5 frames complete, skipped; 1 listed but missing or changed on disk, rendered again)" in out
    assert [x.split(":")[0] for x in out.splitlines() if x.startswith("frame ")] == ["frame 3/5"]
    same_files(serial["light"], tmp_path, names(5))


def test_transient_errors_are_retried_deterministic_ones_are_not(tmp_path, monkeypatch):
    """An EIO in a task is retried (the series completes, that frame tried twice); a
    FrameError (bad input found late) is raised after one try, with the frames in flight
    recorded.  Tries are counted in files (the task function travels pickled)."""
    import errno
    real = nd.render_frame
    log = str(tmp_path)

    def flaky(job, index, hosts=None, bad_token=None):
        with open(os.path.join(log, f"tries_{index}"), "a") as fh:
            fh.write("x")
        n = os.path.getsize(os.path.join(log, f"tries_{index}"))
        if index == 3 and n == 1:
            raise OSError(errno.EIO, "Input/output error")
        if index == 5 and job.keep_image is False:
            raise nd.FrameError("frame 6: late bad input")
        return real(job, index, hosts)

    def tries(i):
        p = tmp_path / f"tries_{i}"
        return p.stat().st_size if p.exists() else 0

    monkeypatch.setattr(nd, "render_frame", flaky)
    cfg = nbxp.config_from_args(LIGHT)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0") as cl, \
            distributed.Client(cl) as c:
        recs = nd.simulate_series(cfg, frames=8, client=c, threads=1)  # images kept: no bad frame
        assert [r["index"] for r in recs] == list(range(8)) and tries(3) == 2 and tries(4) == 1
        for f in tmp_path.iterdir():
            f.unlink()
        plan = nd.make_plan(nbxp.prepare_series(cfg, frames=8), [], threads=1, keep_image=False)
        with pytest.raises(nd.FrameError, match="frame 6: late bad input"):
            nd.run_plans([plan], c)
        assert tries(5) == 1  # not retried
        assert 5 not in plan.records and len(plan.records) >= 5


# ---------------------------------------------------------------- library, sweep

def test_sweep_records_equal_serial_frames(dask_cluster):
    """Two configurations (wavelengths) x 3 still shots on the cluster: the images in the
    records equal nbxp.simulate_series's, shot for shot."""
    _, client = dask_cluster
    i, j = LIGHT.index("-phisteps"), LIGHT.index("-osc")
    base = [a for k, a in enumerate(LIGHT) if k not in (i, i + 1, j, j + 1)]  # stills: no oscillation
    cfgs = [nbxp.config_from_args(base + ["-lambda", lam]) for lam in ("1", "1.3")]
    got = nd.simulate_sweep(cfgs, stills=3, orientation_seed=9, client=client)
    assert [[r["index"] for r in rs] for rs in got] == [[0, 1, 2], [0, 1, 2]]
    for cfg, rs in zip(cfgs, got):
        for f, r in zip(nbxp.simulate_series(cfg, stills=3, orientation_seed=9), rs):
            want = np.asarray(f.image).astype(np.float32)
            assert want.max() > 0
            np.testing.assert_array_equal(r["image"], want)
            assert r["files"] == [] and r["seed"] == f.seed
    assert not np.array_equal(got[0][0]["image"], got[1][0]["image"])


# ---------------------------------------------------------------- refusals and GPU layout

@pytest.mark.parametrize("extra,msg", [
    (["--workers", "0", "--frames", "2"], "--workers: expected a positive number"),
    (["--workers", "99999999999", "--frames", "2"], "--workers: expected at most"),
    (["--workers", "2"], "--workers: needs --frames N or --stills N"),
    (["--resume"], "--resume: needs --frames N"),
    (["--frames", "2", "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "--workers and --scheduler"),
    (["--frames", "2", "--scheduler", "tcp://127.0.0.1:9"], "--scheduler: cannot connect to tcp://127.0.0.1:9"),
    (["--frames", "2", "--scheduler", "nofile.json"], "--scheduler: nofile.json: no such scheduler file"),
])
def test_bad_requests(tmp_path, monkeypatch, capsys, extra, msg):
    """One line, exit 2, and an earlier run's files (its manifest too) left as they were."""
    from nbxp import cli
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(nd, "CONNECT_S", 1.0)
    (tmp_path / "floatimage.manifest.jsonl").write_text("an earlier run's manifest\n")
    assert cli.main(LIGHT + extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and msg in err[0], err
    assert os.listdir(tmp_path) == ["floatimage.manifest.jsonl"]
    assert (tmp_path / "floatimage.manifest.jsonl").read_text() == "an earlier run's manifest\n"


def test_resume_refuses_another_series(tmp_path, monkeypatch, capsys):
    from nbxp import cli
    monkeypatch.chdir(tmp_path)
    assert cli.run(LIGHT + FILES + ["--frames", "2", "--resume"]) == 0
    before = {x: (tmp_path / x).read_bytes() for x in os.listdir(tmp_path)}
    other = [a if a != "5" else "6" for a in LIGHT]  # another noise seed: other files
    assert cli.main(other + FILES + ["--frames", "2", "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--resume: f.manifest.jsonl was written by another series" in err[0]
    assert {x: (tmp_path / x).read_bytes() for x in os.listdir(tmp_path)} == before


def test_fingerprint_is_stable_and_sensitive():
    a = nbxp.config_from_args(LIGHT)
    assert nd.fingerprint(a) == nd.fingerprint(nbxp.config_from_args(LIGHT))
    assert nd.fingerprint(a) != nd.fingerprint(nbxp.config_from_args(LIGHT + ["-N", "5"]))
    # the same in another process (the manifest is read by later runs)
    code = ("import nbxp; from nbxp.distributed import fingerprint; "
            f"print(fingerprint(nbxp.config_from_args({LIGHT!r})))")
    r = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == nd.fingerprint(a)


@pytest.mark.slow
def test_one_worker_per_gpu_layout():
    """Without dask-cuda, --workers N on a GPU node gives worker i CUDA_VISIBLE_DEVICES=i
    (the devices themselves cannot be tested without a GPU; the layout can)."""
    import logging
    cl = nd._visible_devices_cluster(2, nd._tree_env(), logging.ERROR)
    try:
        with distributed.Client(cl) as c:
            c.wait_for_workers(2, timeout=60)
            seen = c.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
            assert sorted(seen.values()) == ["0", "1"]
            assert all(v == 1 for v in c.nthreads().values())
    finally:
        cl.close()

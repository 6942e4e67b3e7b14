"""Faults, secrets and a cache that never lies, against the fake Hub (issue 7).

Every fault either still gives the exact answer (it was retried away) or exits 7 with one line on
stderr and nothing on stdout: no fault ever yields a number. Deadlines carry a wide margin; none
is a speed assertion.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT
from fakehub import VALID_TOKEN, Fault, Repo, VirtualFile, safetensors_head

from inspector.cli import run

GPT2 = "openai-community/gpt2"
QWEN110 = "Qwen/Qwen1.5-110B"
LLAMA2 = "meta-llama/Llama-2-7b-hf"  # gated on the fake Hub, as on the real one


@pytest.fixture
def no_backoff(monkeypatch):
    """Retries without their pauses, so a test of four tries takes no seconds."""
    monkeypatch.setattr("inspector.transport.time.sleep", lambda s: None)


def exact(capsys, args: list[str]) -> dict:
    assert run([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def baseline(fake_hub_server, capsys, monkeypatch, tmp_path) -> dict:
    """The fault-free answers, read once into a cache of their own."""
    monkeypatch.setenv("HF_ENDPOINT", fake_hub_server.endpoint)
    monkeypatch.setenv("HFMEM_CACHE_DIR", str(tmp_path / "baseline_cache"))
    answers = {m: exact(capsys, [m]) for m in (GPT2, QWEN110)}
    monkeypatch.setenv("HFMEM_CACHE_DIR", str(tmp_path / "hfmem_cache"))
    fake_hub_server.reset()
    return answers


def strip_requested(answer: dict) -> dict:
    return {k: v for k, v in answer.items() if k not in ("source", "warnings")}


# --- faults that a retry removes: the exact answer -----------------------------------------------


@pytest.mark.parametrize("fault", [
    Fault("slow", role="cdn", times=5, seconds=1.0),  # latency spikes on five shards
    Fault("reset", role="hub", path="config.json"),  # connection reset mid-body
    Fault("truncate", role="cdn", times=3),  # bodies cut short
    Fault("reset", role="cdn", times=2),
])
def test_transient_faults_still_give_the_exact_answer(fake_hub, baseline, capsys, no_backoff, fault) -> None:
    fake_hub.faults.append(fault)
    assert exact(capsys, [QWEN110]) == baseline[QWEN110]
    assert fault.times == 0  # the fault did happen


@pytest.mark.parametrize("status,headers", [(500, {}), (502, {}), (503, {}), (429, {"Retry-After": "1"})])
def test_5xx_and_429_once_are_retried(fake_hub, baseline, capsys, no_backoff, status, headers) -> None:
    fake_hub.fail_next.append((status, headers))
    assert exact(capsys, [GPT2]) == baseline[GPT2]


def test_a_server_ignoring_range_and_sending_20_gb_is_read_no_further_than_needed(fake_hub, capsys):
    # One F16 tensor of 10 x 2**30 elements: a 20 GiB file the fake serves as zeros, lazily.
    head = safetensors_head({"w": {"dtype": "F16", "shape": [10, 2**30], "data_offsets": [0, 20 * 2**30]}})
    fake_hub.add(Repo("chaos/twenty-gb", "c" * 40, {"model.safetensors": VirtualFile(head, len(head) + 20 * 2**30)},
                      refs={"main": "c" * 40}))
    fake_hub.ignore_range = True
    start = time.monotonic()
    answer = exact(capsys, ["chaos/twenty-gb"])
    assert answer["parameters"]["total"] == 10 * 2**30 and answer["weights_bytes"] == 20 * 2**30
    sent = sum(e.body_bytes for e in fake_hub.log if e.host == "cdn")
    assert sent < 64 * 2**20  # the client hung up after the header, not after 20 GB
    assert time.monotonic() - start < 30  # a wide margin: reading 20 GB would take minutes


# --- faults that persist: exit 7, one line, no number --------------------------------------------


def no_number(capsys, args: list[str], code: int = 7) -> str:
    assert run(args) == code
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("hfmem: error: ") and err.count("\n") == 1, (out, err)
    return err


@pytest.mark.parametrize("fault,message", [
    (Fault("reset", role="hub", path="config.json", times=99), "broken body"),
    (Fault("truncate", role="cdn", times=999), "broken body"),
    (Fault("wrong_range", role="cdn", times=999), "Content-Range does not match"),
])
def test_persistent_faults_exit_7_without_a_number(fake_hub, capsys, no_backoff, fault, message) -> None:
    fake_hub.faults.append(fault)
    assert message in no_number(capsys, [QWEN110])
    no_number(capsys, ["check", QWEN110, "--gpu", "h100"])


def test_5xx_forever_exits_7(fake_hub, capsys, no_backoff) -> None:
    fake_hub.fail_next += [(503, {})] * 50
    no_number(capsys, [GPT2])


def test_a_hung_server_is_abandoned_at_the_timeout(fake_hub, capsys, monkeypatch) -> None:
    fake_hub.faults.append(Fault("hang", role="cdn", times=999, seconds=60))
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "30")  # each request would wait 30 s...
    start = time.monotonic()
    err = no_number(capsys, [QWEN110, "--timeout", "2"])  # ...but the whole run gives up at 2 s
    assert time.monotonic() - start < 2 + 5
    assert "--timeout" in err


@pytest.mark.parametrize("role,path", [("hub", "/revision/"), ("cdn", "")])
def test_a_trickled_body_is_cut_at_the_timeout(fake_hub, capsys, role, path) -> None:
    # One byte every 0.5 s never trips a per-read timeout; the --timeout deadline still holds.
    fake_hub.faults.append(Fault("trickle", role=role, path=path, times=999, seconds=0.5))
    start = time.monotonic()
    assert "--timeout" in no_number(capsys, [QWEN110, "--timeout", "2"])
    assert time.monotonic() - start < 2 + 5


def test_a_failed_shard_ends_the_read_without_reading_the_rest(fake_hub, capsys, monkeypatch) -> None:
    # Two shards in flight at a time, and every CDN answer is wrong: the first failure ends the read;
    # the shards not yet started are never requested (not read to the end before the error shows).
    monkeypatch.setenv("HFMEM_CONCURRENCY", "2")
    fake_hub.faults.append(Fault("wrong_range", role="cdn", times=999))
    assert "Content-Range does not match" in no_number(capsys, [QWEN110])
    assert sum(e.host == "cdn" for e in fake_hub.log) <= 4  # of 45 shards


def test_ctrl_c_ends_a_read_at_once_with_one_line(fake_hub) -> None:
    import signal

    # Every CDN read hangs: without an interrupt this read would take minutes of timeouts.
    model = "mistralai/Mistral-7B-v0.1"  # read by nothing else here: the wait below sees this child
    fake_hub.faults.append(Fault("hang", role="cdn", times=999, seconds=60))
    env = {**os.environ, "HF_ENDPOINT": fake_hub.endpoint}
    code = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler)\n" \
           "from inspector.cli import main; main()"
    proc = subprocess.Popen([sys.executable, "-c", code, model, "--json", "-q"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while not any(model in e.path and e.path.endswith(".safetensors") for e in list(fake_hub.log)):
            assert proc.poll() is None and time.monotonic() < deadline  # until the shards are read
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=5)  # a wide margin: it takes a few milliseconds
    finally:
        proc.kill()
        proc.communicate()
    assert (proc.returncode, out, err) == (130, b"", b"hfmem: interrupted\n")


def test_slow_link_beyond_the_timeout_exits_7(fake_hub, capsys) -> None:
    fake_hub.latency_s = 1.0
    start = time.monotonic()
    no_number(capsys, [QWEN110, "--timeout", "1.5"])
    assert time.monotonic() - start < 1.5 + 5


def test_check_models_with_a_dead_hub_reports_every_entry(fake_hub, capsys, tmp_path, monkeypatch) -> None:
    fake_hub.faults.append(Fault("hang", times=999, seconds=60))
    models = tmp_path / "models.toml"
    models.write_text(f'[defaults]\ngpu = "h100"\n[[model]]\nid = "{GPT2}"\n[[model]]\nid = "{QWEN110}"\n')
    start = time.monotonic()
    assert run(["check", "--models", str(models), "--json", "--timeout", "2"]) == 7
    out = json.loads(capsys.readouterr().out)
    assert [r["exit_code"] for r in out["results"]] == [7, 7] and all(r["fit"] is None for r in out["results"])
    assert time.monotonic() - start < 2 + 5


# --- secrets -------------------------------------------------------------------------------------


def every_file(*roots: Path) -> list[Path]:
    return [p for root in roots if root.exists() for p in root.rglob("*") if p.is_file()]


def test_the_token_appears_nowhere(fake_hub, capsys, tmp_path, monkeypatch, no_backoff) -> None:
    monkeypatch.setenv("HF_TOKEN", VALID_TOKEN)
    outputs = []
    for args in ([LLAMA2, "--json"], [LLAMA2], [LLAMA2, "--format", "markdown"], ["check", LLAMA2, "--gpu", "t4"],
                 ["nobody/nothing"], [LLAMA2, "--revision", "no-such-branch"]):
        run(args)
        outputs.append("".join(capsys.readouterr()))
    fake_hub.fail_next += [(500, {})] * 10  # and an error path
    run([LLAMA2, "--refresh"])
    outputs.append("".join(capsys.readouterr()))
    assert all(VALID_TOKEN not in o for o in outputs)
    for p in every_file(Path(os.environ["HFMEM_CACHE_DIR"])):
        assert VALID_TOKEN.encode() not in p.read_bytes(), p
    assert not any(e.authorized for e in fake_hub.log if e.host == "cdn")  # never sent to the CDN


def test_a_mirror_password_in_hf_endpoint_is_sent_to_it_and_appears_nowhere(fake_hub, capsys, monkeypatch,
                                                                             no_backoff) -> None:
    """HF_ENDPOINT=https://user:password@mirror: the mirror gets it as Basic auth; no output, error,
    cache file or cache file name holds it, and the CDN never sees it."""
    import base64

    from inspector.env import endpoint, endpoint_login

    secret = "s3cret-mirror-pw"
    host = fake_hub.endpoint.split("//")[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://mirror%40corp:{secret}@{host}")
    assert endpoint() == fake_hub.endpoint
    assert endpoint_login() == "Basic " + base64.b64encode(f"mirror@corp:{secret}".encode()).decode()
    outputs = []
    for args in ([GPT2, "--json"], [QWEN110], ["nobody/nothing"], [GPT2, "--revision", "no-such-branch"]):
        run(args)
        outputs.append("".join(capsys.readouterr()))
    monkeypatch.setenv("HF_ENDPOINT", f"http://mirror:{secret}@127.0.0.1:9")  # nothing listens there
    assert run([LLAMA2]) == 7
    outputs.append("".join(capsys.readouterr()))
    assert all(secret not in o for o in outputs) and "127.0.0.1:9" in outputs[-1]
    for p in every_file(Path(os.environ["HFMEM_CACHE_DIR"])):
        assert secret not in str(p) and secret.encode() not in p.read_bytes(), p
    assert all(e.authorized for e in fake_hub.log if e.host == "hub")
    assert not any(e.authorized for e in fake_hub.log if e.host == "cdn")


def test_an_internal_error_shows_no_token_and_no_locals(fake_hub, capsys, monkeypatch) -> None:
    def boom(*args, **kwargs):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr("inspector.api.count_parameters", boom)
    assert run([LLAMA2, "--token", VALID_TOKEN]) == 1
    out, err = capsys.readouterr()
    assert "simulated bug" in err and "this is a bug in hfmem" in err and VALID_TOKEN not in out + err
    assert "Traceback" not in err and err.count("\n") == 1


def test_help_steers_to_hf_token(capsys) -> None:
    assert run(["inspect", "--help"]) == 0
    assert "HF_TOKEN" in capsys.readouterr().out


# --- the cache -----------------------------------------------------------------------------------


def test_a_damaged_http_cache_is_rebuilt_with_a_warning(fake_hub, baseline, capsys) -> None:
    cache = Path(os.environ["HFMEM_CACHE_DIR"])
    cache.mkdir(parents=True)
    (cache / "http.sqlite").write_bytes(b"this is not a database" * 100)
    assert run([GPT2, "--json"]) == 0
    out, err = capsys.readouterr()
    assert strip_requested(json.loads(out)) == strip_requested(baseline[GPT2])
    assert "was damaged; rebuilt it empty" in err
    assert run([GPT2, "--json"]) == 0 and capsys.readouterr().err == ""  # healthy again


def test_a_damaged_snapshot_is_read_again_with_a_warning(fake_hub, baseline, capsys) -> None:
    sha = fake_hub.repos[GPT2].sha
    assert run([GPT2, "--revision", sha, "-q"]) == 0
    capsys.readouterr()
    for p in every_file(Path(os.environ["HFMEM_CACHE_DIR"]) / "snapshots"):
        p.write_bytes(p.read_bytes()[:100])  # both the snapshot and its digest, cut short
    fake_hub.log.clear()
    assert run([GPT2, "--revision", sha, "--json"]) == 0
    out, err = capsys.readouterr()
    assert strip_requested(json.loads(out)) == strip_requested(baseline[GPT2])
    assert "damaged" in err  # read again (from the HTTP cache or the Hub), and saved whole again:
    assert all(p.stat().st_size > 100 for p in every_file(Path(os.environ["HFMEM_CACHE_DIR"]) / "snapshots"))


def test_an_unwritable_cache_dir_runs_uncached_with_a_warning(fake_hub, baseline, capsys, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("HFMEM_CACHE_DIR", str(blocker / "cache"))  # a path under a file: never creatable
    assert run([GPT2, "--json"]) == 0
    out, err = capsys.readouterr()
    assert strip_requested(json.loads(out)) == strip_requested(baseline[GPT2])
    assert "running without it" in err


def test_two_processes_share_one_cache(fake_hub, baseline, tmp_path) -> None:
    env = {**os.environ, "HF_ENDPOINT": fake_hub.endpoint}
    cmd = [sys.executable, "-c", "from inspector.cli import main; main()", QWEN110, "--json", "-q"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
             for _ in range(3)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [r[1] for r in results]
    for out, err in results:
        assert json.loads(out) == baseline[QWEN110] and err == b""
    fake_hub.log.clear()
    warm = subprocess.run(cmd, env=env, capture_output=True, timeout=60, cwd=ROOT)
    assert json.loads(warm.stdout) == baseline[QWEN110] and fake_hub.log == []


# --- regressions from review: the cache never lies -----------------------------------------------


def test_a_partial_hf_cache_download_never_replaces_a_commits_counts(fake_hub, capsys, monkeypatch) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    repo = fake_hub.repos[GPT2]
    assert run([GPT2, "--revision", repo.sha, "-q"]) == 0  # online: snapshot and digest saved
    capsys.readouterr()
    folder = Path(os.environ["HF_HOME"]) / "hub" / "models--openai-community--gpt2"
    (folder / "snapshots" / repo.sha).mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(repo.sha)  # a partial download: one small tensor only
    save_file({"w": np.zeros((3, 4), np.float16)}, str(folder / "snapshots" / repo.sha / "model.safetensors"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HFMEM_CACHE_DIR", str(Path(os.environ["HFMEM_CACHE_DIR"]) / "elsewhere"))
    assert exact(capsys, [GPT2])["parameters"]["total"] == 12  # what that folder holds, offline
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HFMEM_CACHE_DIR", str(Path(os.environ["HFMEM_CACHE_DIR"]).parent))
    assert exact(capsys, [GPT2, "--revision", repo.sha])["parameters"]["total"] == 124_439_808


def test_a_branch_resolved_by_one_endpoint_is_not_served_for_another(fake_hub, capsys, monkeypatch) -> None:
    assert run([GPT2, "-q", "--json"]) == 0
    capsys.readouterr()
    fake_hub.log.clear()
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.endpoint.replace("127.0.0.1", "localhost"))  # another host name
    assert run([GPT2, "-q", "--json"]) == 0
    assert any("/revision/main" in e.path for e in fake_hub.log)  # asked this endpoint where main points


def test_a_cache_damaged_beyond_its_first_page_is_removed_and_rebuilt(fake_hub, capsys) -> None:
    model = "Qwen/Qwen2-7B-Instruct"  # its index fills pages past the first
    before = exact(capsys, [model])
    import inspector.cache

    for key in list(inspector.cache._SESSIONS):  # as a new process would: connections closed, WAL merged
        for session in inspector.cache._SESSIONS.pop(key):
            session.close()
    db = Path(os.environ["HFMEM_CACHE_DIR"]) / "http.sqlite"
    data = bytearray(db.read_bytes())
    for i in range(4096, len(data), 61):  # every page after the first
        data[i] = (data[i] + 7) % 256
    db.write_bytes(data)
    assert run([model, "--json", "--refresh"]) == 0
    out, err = capsys.readouterr()
    assert strip_requested(json.loads(out)) == strip_requested(before)
    assert "was damaged; removed it" in err
    assert run([model, "--json", "--refresh"]) == 0 and capsys.readouterr().err == ""  # rebuilt


def test_a_cache_error_offline_never_reaches_the_network(fake_hub, capsys, monkeypatch) -> None:
    import sqlite3

    sha = fake_hub.repos[GPT2].sha
    assert run([GPT2, "--revision", sha, "-q"]) == 0
    for p in every_file(Path(os.environ["HFMEM_CACHE_DIR"]) / "snapshots"):
        p.unlink()  # only the HTTP cache is left

    def broken(*args, **kwargs):
        raise sqlite3.DatabaseError("database disk image is malformed")

    monkeypatch.setattr("requests_cache.backends.sqlite.SQLiteDict.__getitem__", broken)
    fake_hub.log.clear()
    assert run([GPT2, "--revision", sha, "--offline"]) == 8
    assert fake_hub.log == []


def test_prune_keeps_a_snapshot_that_warm_runs_use(fake_hub, capsys) -> None:
    sha = fake_hub.repos[GPT2].sha
    assert run([GPT2, "--revision", sha, "-q"]) == 0
    snaps = every_file(Path(os.environ["HFMEM_CACHE_DIR"]) / "snapshots")
    for p in snaps:
        os.utime(p, (time.time() - 40 * 86400,) * 2)  # read 40 days ago...
    assert run([GPT2, "--revision", sha, "-q"]) == 0  # ...and used again today, from the digest
    assert run(["cache", "prune", "--older-than", "30", "-q"]) == 0
    assert all(p.exists() for p in snaps)


def test_a_damaged_snapshot_beside_a_good_digest_is_read_again(fake_hub, capsys, tmp_path) -> None:
    sha = fake_hub.repos[GPT2].sha
    assert run([GPT2, "--revision", sha, "-q"]) == 0
    snapshot = next(p for p in every_file(Path(os.environ["HFMEM_CACHE_DIR"]) / "snapshots")
                    if not p.name.endswith(".digest.json"))
    snapshot.write_bytes(snapshot.read_bytes()[:-10])
    assert run([GPT2, "--revision", sha, "--save-snapshot", str(tmp_path / "s.json"), "-q"]) == 0
    assert json.loads((tmp_path / "s.json").read_text())["headers"]


# --- issue 16: bombs, malformed values, offline after a failed read -------------------------------


def _gzip_bomb(decoded_mb: int) -> bytes:
    """`gzip, gzip` of `decoded_mb` MiB of zeros in a few KB: 16 MiB members concatenated, gzipped again."""
    import gzip as gz

    member = gz.compress(b"\0" * (16 << 20), 9)
    return gz.compress(member * (decoded_mb // 16), 9)


@pytest.mark.parametrize("path", ["/revision/", "config.json", "/cdn/"], ids=["plain", "cached", "range"])
def test_a_nested_gzip_bomb_is_refused_within_the_body_limit(fake_hub, capsys, monkeypatch, path) -> None:
    import tracemalloc

    bomb = _gzip_bomb(256)
    assert len(bomb) < 64 * 1024
    monkeypatch.setattr("inspector.bodies.MAX_JSON_BYTES", 4 << 20)  # (the limit, lowered to keep this test small)

    def compress(role, p, status, headers, body):
        if path in p and status in (200, 206):
            return status, {**headers, "Content-Encoding": "gzip, gzip"}, bomb
        return status, headers, body

    fake_hub.rewrite = compress
    tracemalloc.start()
    try:
        code = run([GPT2, "--json"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    err = capsys.readouterr().err
    assert code in (6, 7) and err.count("\n") == 1, err
    assert peak < 48 << 20  # never the 256 MiB the bomb decodes to


def test_a_gzipped_answer_within_the_limit_is_read(fake_hub, baseline, capsys) -> None:
    import gzip as gz

    def compress(role, p, status, headers, body):
        if status == 200 and isinstance(body, bytes) and body:
            return status, {**headers, "Content-Encoding": "gzip"}, gz.compress(body)
        return status, headers, body

    fake_hub.rewrite = compress
    assert exact(capsys, [GPT2]) == baseline[GPT2]


def _revision_with(**changes):
    def rewrite(role, path, status, headers, body):
        if "/revision/" in path and status == 200:
            info = json.loads(body)
            for key, value in changes.items():
                if key == "size":
                    for s in info["siblings"]:
                        s["size"] = value
                else:
                    info[key] = value
            return 200, headers, json.dumps(info).encode()
        return status, headers, body
    return rewrite


@pytest.mark.parametrize("changes", [
    {"siblings": [{"rfilename": 5}]}, {"siblings": [{"rfilename": None}]}, {"siblings": [{"rfilename": ["a"]}]},
    {"siblings": [{"rfilename": {}}]}, {"siblings": [{"rfilename": "../../x.safetensors"}]},
    {"siblings": {"a": 1}}, {"sha": 5}, {"sha": ["a" * 40]}, {"size": "12"}, {"size": -5}, {"size": 10**400},
], ids=str)
def test_malformed_api_fields_exit_7_in_one_line(fake_hub, capsys, changes) -> None:
    fake_hub.rewrite = _revision_with(**changes)
    no_number(capsys, [GPT2])


@pytest.mark.parametrize("location", ["http://[::1", "\x00", "file:///etc/passwd", "ftp://x/y",
                                      "http://127.0.0.1:99999/x", "http://a b/"], ids=repr)
def test_malformed_or_foreign_redirect_targets_are_refused_not_followed(fake_hub, capsys, no_backoff, location):
    def redirect(role, path, status, headers, body):
        return (status, {**headers, "Location": location}, body) if status == 302 else (status, headers, body)

    fake_hub.rewrite = redirect
    assert "refused" in no_number(capsys, [GPT2])
    assert not [e for e in fake_hub.log if e.host == "cdn"]


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "1e308", "9" * 400])
def test_any_retry_after_is_a_bounded_pause(fake_hub, baseline, capsys, monkeypatch, value) -> None:
    pauses: list[float] = []
    monkeypatch.setattr("inspector.transport.time.sleep", pauses.append)
    fake_hub.fail_next.append((429, {"Retry-After": value}))
    assert exact(capsys, [GPT2]) == baseline[GPT2]
    assert pauses and all(0 <= p <= 10 for p in pauses)  # (nan compares false with everything)


@pytest.mark.parametrize("header,value", [("Content-Range", "bytes 0-{last}/" + "9" * 400),
                                          ("Content-Range", "bytes 0-{last}/" + "9" * 5000),
                                          ("Content-Length", "9" * 5000)])
def test_400_digit_positions_are_a_broken_answer(fake_hub, capsys, monkeypatch, header, value) -> None:
    def rewrite(role, path, status, headers, body):
        if role == "cdn" and status in (200, 206):
            last = len(body.read(0, 2**40)) - 1 if hasattr(body, "read") else len(body) - 1
            return status, {**headers, header: value.format(last=last)}, body
        return status, headers, body

    fake_hub.ignore_range = header == "Content-Length"
    fake_hub.rewrite = rewrite
    code = run([GPT2, "--json"])
    assert code in (0, 7) and capsys.readouterr().err.count("\n") <= 1


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0", "1e308"])
def test_a_nonsense_download_timeout_is_ignored(fake_hub, baseline, capsys, monkeypatch, value) -> None:
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", value)
    assert exact(capsys, [GPT2]) == baseline[GPT2]


def test_a_looping_tree_pagination_exits_7(fake_hub, capsys) -> None:
    fake_hub.omit_siblings = True

    def loop(role, path, status, headers, body):
        if "/tree/" in path:
            return status, {**headers, "Link": f'<{fake_hub.endpoint}{path}>; rel="next"'}, body
        return status, headers, body

    fake_hub.rewrite = loop
    assert "loop" in no_number(capsys, [GPT2])


@pytest.mark.parametrize("fault", [
    Fault("reset", role="cdn", times=99), Fault("reset", role="hub", path="config.json", times=99),
    Fault("truncate", role="hub", path="index.json", times=99), Fault("reset", role="hub", path="/revision/", times=99),
], ids=["cdn-reset", "config-reset", "index-truncated", "revision-reset"])
def test_offline_after_a_failed_read_is_exit_8_not_an_internal_error(fake_hub, capsys, monkeypatch, no_backoff,
                                                                      fault) -> None:
    """The cause (issue 16): offline, requests-cache's own "not cached" 504 is a response *from the
    cache*, and it was read as a body (None)."""
    fake_hub.faults.append(fault)
    online = run([QWEN110, "--json"])
    capsys.readouterr()
    fake_hub.faults.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = run([QWEN110, "--json"])
    err = capsys.readouterr().err
    assert code == (0 if online == 0 else 8), err
    assert code == 0 or err.startswith("hfmem: error: offline") and err.count("\n") == 1


def test_offline_after_a_ctrl_c_mid_read_is_exit_8(fake_hub, capsys, monkeypatch) -> None:
    import inspector.hub as hub

    read = hub.HubClient.header_bytes
    calls = []

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return read(self, *args, **kwargs)

    monkeypatch.setattr(hub.HubClient, "header_bytes", interrupted)
    assert run([QWEN110, "--json"]) != 0
    monkeypatch.setattr(hub.HubClient, "header_bytes", read)
    capsys.readouterr()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert run([QWEN110, "--json"]) == 8


def test_a_hung_worker_process_is_given_up_at_the_deadline(fake_hub, baseline, capsys, monkeypatch) -> None:
    """A worker that never answers (here: one that sleeps) is killed at --timeout, not after
    workers.WAIT_S (30 s), and its shards parsed in this process: the exact answer, in time."""
    monkeypatch.setenv("HFMEM_PARSE_WORKERS", "1")
    monkeypatch.setattr("inspector.workers._BOOT", "import time; time.sleep(3600)")
    started = time.monotonic()
    assert exact(capsys, [QWEN110, "--timeout", "4"]) == baseline[QWEN110]
    assert time.monotonic() - started < 20  # the deadline (4 s) and slack, with a margin for a loaded machine

"""Benchmark hfmem's Hub reads against the fake Hub of tests/fakehub.py (issue 6).

    python bench/run.py [--runs N] [--quick] [--out bench/RESULTS.md]

The fake Hub runs in this process with `latency_s` injected per request; the installed `hfmem`
(beside sys.executable) runs as a subprocess with HF_ENDPOINT pointing at it, a fresh cache and no
token. Round-trip layers, requests and bytes come from the server's request log; times, CPU and
peak RSS from the child's rusage. bench/README.md explains the protocol and the targets.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tabulate import tabulate

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from fakehub import CA_BUNDLE, FakeHub, Logged, Repo, VirtualFile, repo_from_snapshot, safetensors_head  # noqa: E402

SNAPSHOTS = ROOT / "fixtures" / "snapshots"
MODELS = ("openai-community/gpt2", "mistralai/Mistral-7B-v0.1", "Qwen/Qwen1.5-110B", "deepseek-ai/DeepSeek-V3")
QUICK_MODELS = ("openai-community/gpt2", "mistralai/Mistral-7B-v0.1", "deepseek-ai/DeepSeek-V3")
DEEPSEEK, SYNTHETIC, SYNTHETIC_SHARDS = "deepseek-ai/DeepSeek-V3", "bench/synthetic-1000-shards", 1000
INDEX = "model.safetensors.index.json"
LATENCIES_S = (0.05, 0.15)
# Targets (issue 6). CONCURRENCY is hfmem's DEFAULT_CONCURRENCY (inspector/hub.py): each wave of
# 64 shards costs two layers (resolve -> redirect, then the CDN Range read).
CONCURRENCY = 64
COLD_SLACK_S, WARM_PINNED_S, WARM_BRANCH_S, VERSION_S = 0.5, 0.35, 0.6, 0.15
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
RSS_LIMIT_MB, BYTES_RATIO = 200, 1.5


# -- repos ---------------------------------------------------------------------------------------


def tensors(f: VirtualFile) -> list[tuple[str, dict]]:
    """A served safetensors file's header entries, `__metadata__` left out."""
    n = int.from_bytes(f.head[:8], "little")
    return [(k, v) for k, v in json.loads(f.head[8 : 8 + n]).items() if k != "__metadata__"]


def json_file(obj: object) -> VirtualFile:
    body = json.dumps(obj, indent=2).encode()  # as repo_from_snapshot serves JSON files
    return VirtualFile(body, len(body))


def with_index(files: dict[str, VirtualFile]) -> dict[str, VirtualFile]:
    shards = {n: tensors(f) for n, f in sorted(files.items()) if n.endswith(".safetensors")}
    weight_map = {t: name for name, table in shards.items() for t, _ in table}
    total = sum(e["data_offsets"][1] - e["data_offsets"][0] for table in shards.values() for _, e in table)
    files[INDEX] = json_file({"metadata": {"total_size": total}, "weight_map": weight_map})
    return files


def load_repo(repo_id: str, synth_index: bool = True) -> Repo:
    plain = SNAPSHOTS / (repo_id.replace("/", "--") + ".json")  # named as tests/conftest.py does
    repo = repo_from_snapshot(plain if plain.exists() else plain.with_name(plain.name + ".gz"))
    # NOTE: the real Qwen1.5-110B and DeepSeek-V3 repos carry an index; their snapshots do not
    # (fixtures/README.md: reconstructed layouts), so serve one built from the snapshot's headers.
    if synth_index and INDEX not in repo.files and sum(n.endswith(".safetensors") for n in repo.files) > 1:
        with_index(repo.files)
    return repo


def synthetic_repo(source: Repo, n: int = SYNTHETIC_SHARDS) -> Repo:
    """`source`'s tensors dealt round-robin into n shards, offsets recomputed, with an index."""
    table = [t for name, f in sorted(source.files.items()) if name.endswith(".safetensors") for t in tensors(f)]
    files = {"config.json": source.files["config.json"]}
    for i in range(n):
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        for t, e in table[i::n]:
            size = e["data_offsets"][1] - e["data_offsets"][0]
            header[t] = {"dtype": e["dtype"], "shape": e["shape"], "data_offsets": [offset, offset + size]}
            offset += size
        head = safetensors_head(header)
        files[f"model-{i + 1:05d}-of-{n:05d}.safetensors"] = VirtualFile(head, len(head) + offset)
    sha = hashlib.sha1(SYNTHETIC.encode()).hexdigest()
    return Repo(SYNTHETIC, sha, with_index(files), refs={"main": sha})


def useful_bytes(repo: Repo) -> int:
    """What a perfect client must receive: each shard's 8-byte prefix + header, and the JSON files."""
    shards = sum(8 + int.from_bytes(f.head[:8], "little") for n, f in repo.files.items() if n.endswith(".safetensors"))
    return shards + sum(f.size for n, f in repo.files.items() if n.endswith(".json"))


# -- running hfmem -------------------------------------------------------------------------------


@dataclass
class Run:
    rc: int
    wall_s: float
    rss_kib: int
    cpu_s: float  # hfmem's user + system CPU time
    hub_cpu_s: float  # this process's meanwhile: the fake Hub's threads
    pre_s: float  # from spawn to the first request
    post_s: float  # from the last response to exit
    requests: int
    layers: int
    sent: int  # response body bytes
    second_reads: int  # CDN reads not from byte 0: a header longer than predicted
    kinds: str  # "N (api/resolve/cdn)"
    err: str  # the last line on stderr
    out: str  # the first line on stdout

    @property
    def cpu_floor_s(self) -> float:
        """The least wall time this run's CPU allowed: its start-up (one thread, nothing else running
        until the first request), then all the CPU left, hfmem's and the fake Hub's, spread over every
        core. A lower bound: start-up is counted as if it were all CPU, and no core is left idle."""
        return self.pre_s + max(0.0, self.cpu_s + self.hub_cpu_s - self.pre_s) / CORES


def layers(log: list[Logged]) -> int:
    """layer(r) = 1 + max(layer(q) for q ended before r started), 1 if none; the run's is the max."""
    order = sorted(log, key=lambda e: e.started_s)
    by_end = sorted(range(len(order)), key=lambda i: order[i].ended_s)
    layer, done, j = [0] * len(order), 0, 0
    for i, e in enumerate(order):
        while j < len(by_end) and order[by_end[j]].ended_s <= e.started_s:
            done = max(done, layer[by_end[j]])  # it started before e, so its layer is known
            j += 1
        layer[i] = done + 1
    return max(layer, default=0)


# A child forked from this process starts with this process's memory in its peak RSS (Linux keeps
# the old address space's high-water mark across exec), and this one holds DeepSeek's tensor
# tables: so hfmem is started by a small fresh Python that reports its child's times, exit status,
# ru_maxrss (KiB on Linux) and CPU time.
SPAWNER = """
import os, sys, time
start = time.monotonic()
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
end = time.monotonic()
with open(sys.argv[1], "w") as f:
    cpu = usage.ru_utime + usage.ru_stime
    f.write(f"{start} {end} {os.waitstatus_to_exitcode(status)} {usage.ru_maxrss} {cpu}")
"""


def hfmem_path() -> str:
    beside = Path(sys.executable).parent / "hfmem"
    return str(beside if beside.exists() else ROOT / ".venv" / "bin" / "hfmem")


def child_env(hub: FakeHub, home: Path) -> dict[str, str]:
    """As tests/conftest.py's clean_env: no HF_*/HFMEM_* setting, no token, no proxy leaks in."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HFMEM_", "HUGGING_FACE_")) and not k.lower().endswith("_proxy")}
    env.update(HF_ENDPOINT=hub.endpoint, HF_HOME=str(home / "hf_home"), HFMEM_CACHE_DIR=str(home / "cache"),
               HF_TOKEN_PATH=str(home / "hf_home" / "token"), HF_HUB_DISABLE_TELEMETRY="1")
    if hub.scheme == "https":
        # certifi's certificates (what requests trusts by default) and the fake Hub's test CA, as a
        # company's bundle is: a bundle of the default's size costs what the default costs to read.
        from requests.utils import DEFAULT_CA_BUNDLE_PATH

        bundle = home / "ca-bundle.pem"
        bundle.write_bytes(Path(DEFAULT_CA_BUNDLE_PATH).read_bytes() + CA_BUNDLE.read_bytes())
        env["REQUESTS_CA_BUNDLE"] = str(bundle)
    return env


def run_hfmem(hub: FakeHub, args: list[str], env: dict[str, str]) -> Run:
    with hub.lock:
        hub.log.clear()
    with tempfile.TemporaryDirectory() as tmp, open(f"{tmp}/out", "w+b") as out, open(f"{tmp}/err", "w+b") as err:
        hub_cpu = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
        spawner = [sys.executable, "-I", "-S", "-c", SPAWNER, f"{tmp}/result", hfmem_path(), *args]
        rc = subprocess.run(spawner, stdout=out, stderr=err, env=env).returncode
        hub_cpu = sum(resource.getrusage(resource.RUSAGE_SELF)[:2]) - hub_cpu
        try:
            start, end, code, rss, cpu = Path(f"{tmp}/result").read_text().split()
        except (OSError, ValueError):  # the spawner itself failed
            start, end, code, rss, cpu = "0", "0", str(rc or 1), "0", "0"
        out.seek(0)
        err.seek(0)
        first = out.readline().decode(errors="replace").strip()
        lines = err.read().decode(errors="replace").strip().splitlines() or [""]
    deadline = time.monotonic() + 2.0  # a handler may still be stamping ended_s
    while any(not e.ended_s for e in hub.log) and time.monotonic() < deadline:
        time.sleep(0.01)
    with hub.lock:
        log = list(hub.log)
    start_s, end_s = float(start), float(end)
    pre = min((e.started_s for e in log), default=end_s) - start_s
    post = end_s - max((e.ended_s for e in log), default=end_s)
    again = sum(e.host == "cdn" and bool(e.range) and not e.range.startswith("bytes=0-") for e in log)
    api, cdn = sum(e.path.startswith("/api/") for e in log), sum(e.host == "cdn" for e in log)
    kinds = f"{len(log)} ({api}/{len(log) - api - cdn}/{cdn}{f' +{again} 2nd' if again else ''})"
    return Run(int(code), end_s - start_s, int(rss), float(cpu), hub_cpu, pre, post, len(log), layers(log),
               sum(e.body_bytes for e in log), again, kinds, lines[-1], first)


@dataclass
class Case:
    repo: Repo
    latency_s: float
    connect_latency_s: float = 0.0
    cold: list[Run] = field(default_factory=list)
    pinned: list[Run] = field(default_factory=list)
    branch: list[Run] = field(default_factory=list)
    name: str = field(init=False)
    shards: int = field(init=False)
    useful: int = field(init=False)  # bytes: see useful_bytes

    def __post_init__(self) -> None:
        self.name = f"{self.repo.repo_id} @{self.latency_s * 1000:.0f} ms"
        self.shards = sum(n.endswith(".safetensors") for n in self.repo.files)
        self.useful = useful_bytes(self.repo)

    @property
    def failed(self) -> list[str]:
        runs = [("cold", self.cold), ("pinned", self.pinned), ("branch", self.branch)]
        return [f"{what} rc={r.rc}: {r.err[:100]}" for what, rs in runs for r in rs if r.rc]

    def ratio(self) -> float:
        return worst(self.cold, "sent") / self.useful

    def layer_bound(self) -> int:  # +1 when a header needed a second read (hub.py, layer 4)
        return 1 + 2 * math.ceil(self.shards / CONCURRENCY) + (worst(self.cold, "second_reads") > 0)


def median(runs: list[Run], attr: str) -> float:
    return statistics.median(getattr(r, attr) for r in runs)


def worst(runs: list[Run], attr: str) -> int:
    return max(getattr(r, attr) for r in runs)


def measure(hub: FakeHub, case: Case) -> None:
    """One run of a case: cold (fresh cache), warm pinned, warm branch."""
    hub.latency_s, hub.connect_latency_s, repo = case.latency_s, case.connect_latency_s, case.repo
    with tempfile.TemporaryDirectory(prefix="hfmem-bench-") as home:
        env = child_env(hub, Path(home))
        case.cold.append(run_hfmem(hub, [repo.repo_id, "--json", "-q"], env))
        case.pinned.append(run_hfmem(hub, [repo.repo_id, "--revision", repo.sha, "--json", "-q"], env))
        case.branch.append(run_hfmem(hub, [repo.repo_id, "--json", "-q"], env))


# -- targets and report --------------------------------------------------------------------------


def targets(cases: list[Case], version_s: float) -> list[list[str]]:
    out = [["`--version` wall", "all", f"{version_s:.3f} s", f"< {VERSION_S} s", version_s < VERSION_S]]
    for c in cases:
        ok, n_layers, cold_s = not c.failed, worst(c.cold, "layers"), median(c.cold, "wall_s")
        pinned = worst(c.pinned, "requests"), median(c.pinned, "wall_s")
        branch = worst(c.branch, "requests"), median(c.branch, "wall_s")
        cold_limit = n_layers * c.latency_s + COLD_SLACK_S
        floor = median(c.cold, "cpu_floor_s")
        out += [
            ["cold layers", c.name, str(n_layers), f"<= {c.layer_bound()}", ok and n_layers <= c.layer_bound()],
            ["cold wall", c.name, f"{cold_s:.2f} s (CPU floor {floor:.2f} s)", f"< {cold_limit:.2f} s",
             ok and cold_s < cold_limit, floor >= cold_limit],
            ["warm pinned", c.name, f"{pinned[0]} req, {pinned[1]:.3f} s", f"0 req, < {WARM_PINNED_S} s",
             ok and pinned[0] == 0 and pinned[1] < WARM_PINNED_S],
            ["warm branch", c.name, f"{branch[0]} req, {branch[1]:.3f} s", f"<= 1 req, < {WARM_BRANCH_S} s",
             ok and branch[0] <= 1 and branch[1] < WARM_BRANCH_S],
        ]
        if c.shards > 1:
            ratio = c.ratio()
            out.append(["bytes / useful", c.name, f"{ratio:.2f}", f"<= {BYTES_RATIO}", ok and ratio <= BYTES_RATIO])
        if c.repo.repo_id == SYNTHETIC:
            mb = worst(c.cold, "rss_kib") / 1024
            out.append(["peak RSS", c.name, f"{mb:.0f} MB", f"< {RSS_LIMIT_MB} MB", ok and mb < RSS_LIMIT_MB])
    return [[*t[:4], "met" if t[4] else "NOT met" + (" (CPU floor)" if t[5:] and t[5] else "")] for t in out]


COLUMNS = ["model", "shards", "lat ms", "cold s", "pre/post s", "CPU s", "layers", "requests (api/resolve/cdn)",
           "KiB sent", "KiB useful", "ratio", "RSS MB", "pinned s (req)", "branch s (req)", "errors"]


def table_row(c: Case) -> list:
    return [c.repo.repo_id, c.shards, f"{c.latency_s * 1000:.0f}", f"{median(c.cold, 'wall_s'):.2f}",
            f"{median(c.cold, 'pre_s'):.2f}/{median(c.cold, 'post_s'):.2f}",
            f"{median(c.cold, 'cpu_s'):.2f}/{median(c.cold, 'hub_cpu_s'):.2f}", worst(c.cold, "layers"),
            c.cold[-1].kinds, f"{worst(c.cold, 'sent') / 1024:,.0f}", f"{c.useful / 1024:,.0f}",
            f"{c.ratio():.2f}", f"{worst(c.cold, 'rss_kib') / 1024:.0f}",
            f"{median(c.pinned, 'wall_s'):.3f} ({worst(c.pinned, 'requests')})",
            f"{median(c.branch, 'wall_s'):.3f} ({worst(c.branch, 'requests')})",
            f"{len(c.failed)} failed: {c.failed[0]}" if c.failed else "-"]


def machine() -> list[str]:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    cpu = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "unknown")
    return [f"CPU: {cpu}, {os.cpu_count()} cores", f"Python {platform.python_version()}", f"OS: {platform.platform()}"]


def steadiness() -> float:
    """Seconds of a fixed pure-Python loop: run once per round, to show how steady the machine was
    (a shared machine's speed was seen to change by 1.7x within minutes)."""
    start = time.perf_counter()
    total = 0
    for i in range(1_000_000):
        total += i * i
    return time.perf_counter() - start


PROTOCOL = f"""\
The package is byte-compiled first (as pip does on install). Each case runs `hfmem MODEL --json -q`
as a subprocess against the fake Hub of `tests/fakehub.py`
(started in the benchmark process; the server sleeps `latency_s` before each answer), with
`HF_ENDPOINT` set to it, a fresh `HFMEM_CACHE_DIR` and `HF_HOME` per run, no token. Per run: a cold
run (empty cache), then `--revision <sha>` (warm pinned), then the branch name again (warm branch).
Runs go in rounds, each case once per round. Times are medians of the runs, counts the worst run.
Columns (all of the cold run unless named):

- **cold s**: wall time, spawn to exit. **pre/post s**: of that, the time before the first request
  reached the fake Hub, and after the last response was written.
- **CPU s**: user + system CPU of hfmem / of the fake Hub's threads meanwhile. They share this
  machine's cores: a CPU-bound client issues its requests late and spreads them over more layers.
- **layers**: sequential round trips, from the server log: layer(r) = 1 + max layer(q) over the
  requests q that ended before r started (1 if none); the run's is the max.
- **requests**: API / `resolve` on the Hub host / CDN; `+N 2nd`: CDN reads not starting at byte 0.
- **KiB sent**: response body bytes the server wrote. **KiB useful**: sum over shards of
  (8 + header length) plus the repo's JSON files (config.json, the index). **ratio** = sent/useful.
- **RSS MB**: peak RSS (`ru_maxrss` from `os.wait4`) of the hfmem process.
- **pinned / branch s (req)**: wall time and requests of the warm runs.

`{SYNTHETIC}` is DeepSeek-V3's tensor table dealt round-robin into {SYNTHETIC_SHARDS} shards with
recomputed offsets and an index. The Qwen1.5-110B and DeepSeek-V3 snapshots have no index (their
shard layouts are reconstructed, see fixtures/README.md) while the real repos have one, so the
benchmark serves an index built from their headers (`--no-synth-index` serves them as they are).

The fake Hub speaks plain HTTP. With `--tls` both its hosts speak HTTPS (a test CA, trusted through a
`REQUESTS_CA_BUNDLE` of certifi's certificates and that CA), so each new connection costs its TLS
handshake's CPU on both sides. The latency is per request: the round trips of a new connection's
TCP and TLS handshakes are simulated only with `--connect-latency MS` (the fake Hub waits that long
on each new connection before it reads the first request).

Targets: cold layers <= 1 + 2*ceil(shards/{CONCURRENCY}) (+1 when a header needed a second read);
cold wall < layers x latency + {COLD_SLACK_S} s; warm pinned 0 requests and < {WARM_PINNED_S} s; warm branch
<= 1 request and < {WARM_BRANCH_S} s; `hfmem --version` < {VERSION_S} s; {SYNTHETIC} peak RSS < {RSS_LIMIT_MB} MB;
bytes sent <= {BYTES_RATIO}x useful for sharded models. A case with a failed hfmem run meets no target.

The **CPU floor** of a cold run is the least wall time its CPU allowed on this machine's {CORES} cores:
its start-up (pre), then the rest of hfmem's CPU and the fake Hub's, spread over all cores
(pre + (CPU s of both - pre) / cores, the median of the runs). A lower bound: the start-up is
counted as if it were all CPU, and no core is left idle. A wall target marked `NOT met (CPU floor)`
could not be met at that CPU cost whatever the order of the requests."""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="runs per case (median); default 5")
    ap.add_argument("--quick", action="store_true", help="1 run, fewer models, 50 ms only")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS.md")
    ap.add_argument("--no-synth-index", action="store_true", help="serve index-less snapshots as they are")
    ap.add_argument("--tls", action="store_true", help="the fake Hub and its CDN speak HTTPS")
    ap.add_argument("--connect-latency", type=float, default=0.0, metavar="MS",
                    help="the fake Hub waits this long on each new connection, as a TCP and TLS handshake "
                    "costs round trips (2 for TLS 1.3: twice the latency); default 0")
    ap.add_argument("--model", action="append", default=[], metavar="TEXT",
                    help="only the models whose id contains TEXT (repeatable; 'synthetic' for the 1000 shards)")
    ap.add_argument("--latency", action="append", type=float, default=[], metavar="MS",
                    help="only this injected latency in ms (repeatable)")
    args = ap.parse_args()
    runs = 1 if args.quick else max(1, args.runs)
    models, latencies = (QUICK_MODELS, LATENCIES_S[:1]) if args.quick else (MODELS, LATENCIES_S)
    if args.latency:
        latencies = tuple(ms / 1000 for ms in args.latency)
    if not Path(hfmem_path()).exists():
        sys.exit(f"no hfmem at {hfmem_path()}: install the project (pip install -e .) first")

    # Byte-compiled first, as pip does on install: with PYTHONDONTWRITEBYTECODE set (as on CI
    # machines and in containers) an editable checkout would compile its changed modules in every run.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "inspector")], check=False)
    began = time.perf_counter()
    hub = FakeHub(tls=args.tls)
    try:
        def wanted(repo_id: str) -> bool:
            return not args.model or any(text in repo_id for text in args.model)

        repos = [hub.add(load_repo(m, not args.no_synth_index)) for m in models if wanted(m)]
        if wanted(SYNTHETIC):
            repos.append(hub.add(synthetic_repo(next((r for r in repos if r.repo_id == DEEPSEEK), None)
                                                or load_repo(DEEPSEEK))))
        with tempfile.TemporaryDirectory(prefix="hfmem-bench-") as home:
            env = child_env(hub, Path(home))
            version = [run_hfmem(hub, ["--version"], env) for _ in range(runs)]
            helps = [run_hfmem(hub, ["--help"], env) for _ in range(runs)]
        # Rounds, each running every case once: a slow spell of a shared machine (its speed was
        # seen to change by 1.7x within minutes) then spreads over the cases, not onto one case's runs.
        cases = [Case(repo, latency, args.connect_latency / 1000) for latency in latencies for repo in repos]
        loops = []
        for i in range(runs):
            print(f"  round {i + 1} of {runs} ...", file=sys.stderr, flush=True)
            loops.append(steadiness())
            for case in cases:
                measure(hub, case)
    finally:
        hub.close()

    version_s = median(version, "wall_s")
    startup = (f"Start-up (median of {runs}): `hfmem --version` {version_s:.3f} s, "
               f"`hfmem --help` {median(helps, 'wall_s'):.3f} s.")
    table, goals = [table_row(c) for c in cases], targets(cases, version_s)
    met = sum(g[4] == "met" for g in goals)
    print(tabulate(table, COLUMNS, disable_numparse=True) + "\n\n" + startup + "\n")
    print(tabulate(goals, headers=["target", "case", "measured", "limit", "result"]))
    print(f"\n{met}/{len(goals)} targets met; {time.perf_counter() - began:.0f} s in all")

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = "python bench/run.py" + (" --quick" if args.quick else f" --runs {runs}") + \
        (" --no-synth-index" if args.no_synth_index else "") + (" --tls" if args.tls else "") + \
        (f" --connect-latency {args.connect_latency:g}" if args.connect_latency else "")
    text = "\n\n".join([
        "# hfmem benchmark results",
        f"Written by `{command}` on {now}.",
        "## Machine\n\n" + "\n".join(f"- {m}" for m in machine())
        + f"\n- `hfmem --version`: {version[-1].out or version[-1].err}"
        + f"\n- Steadiness: a fixed loop took {min(loops):.3f}-{max(loops):.3f} s across the rounds"
        + " (equal numbers: a steady machine)",
        "## Protocol\n\n" + PROTOCOL,
        "## Results\n\n" + tabulate(table, COLUMNS, tablefmt="github", disable_numparse=True) + "\n\n" + startup,
        f"## Targets ({met}/{len(goals)} met)\n\n"
        + tabulate(goals, headers=["target", "case", "measured", "limit", "result"], tablefmt="github"),
    ]) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

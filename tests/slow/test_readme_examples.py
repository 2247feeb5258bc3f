"""Every example command in the README runs as written, shortened.

The commands are read from the README's bash blocks, in order, and run in a shell in a fresh
folder that holds the inputs they name (`my_text.txt`, `my_corpus/`, `notes/`, `big_folder/`,
`a.txt`, `b.txt`, all cut from the test corpus, and `my_chats.jsonl`, conversations). Training
is cut to a few steps of batches of 2, generation to 40 tokens, and `eval` to a small file. A
few cannot run here and are skipped, each for a reason: benchmarks (not examples), torchrun on 8
GPUs or 2 machines (multi-process training is tested in `test_distributed_runs.py`), a CUDA
device where there is none, and the Hugging Face Hub (offline: `import-hf openai-community/gpt2`
reads a tiny local GPT-2 folder instead, so the fine-tuning commands after it run as written).

A plain `gptscratch ...` command runs in one long-lived worker process (`tests/readme_worker.py`:
the console script's `main` with the words bash splits the line into), so the examples do not
pay torch's import ~30 times; a line with a pipe, a redirection or several commands runs in
bash as written.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import PLAYS, REPO, write_conversations
from readme_worker import MARK, STDIN

README = (REPO / "README.md").read_text(encoding="utf-8")
HUB_GPT2 = "openai-community/gpt2"


def readme_commands() -> list[str]:
    """The README's shell commands outside the Quickstart (whose set-up CI runs), in order,
    backslash continuations joined and comments dropped."""
    body = README.split("## Quickstart", 1)[1].split("\n## ", 1)[1]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", body, re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def skip_reason(command: str) -> str | None:
    if command.startswith(("python ", "pip ", "python3 ")):
        return "an installer or a benchmark, not an example of gptscratch"
    if command.startswith("torchrun"):
        return "needs several GPUs or machines (see test_distributed_runs.py)"
    if "--device cuda" in command and not torch.cuda.is_available():
        return "needs a CUDA GPU"
    if "roneneldan/TinyStories" in command:
        return "needs the Hugging Face Hub (offline here)"
    return None


def shortened(command: str, hub_gpt2: Path) -> str:
    """The command with training cut to a few steps and generation to 40 tokens."""
    command = command.replace(HUB_GPT2, str(hub_gpt2))
    if " train " in f" {command} " and "--resume" not in command:
        stopping = "--stop-at" in command
        command = re.sub(r"--(max-iters|stop-at) \d+", "", command)
        command += (" --max-iters 8 --stop-at 4" if stopping else " --max-iters 6")
        command += " --eval-interval 3 --eval-iters 1 --max-time 0 --sample-tokens 20"
        if "--batch-size" not in command:  # a GPT-2-vocabulary preset: 24 s a step at 16x2
            command += " --batch-size 2 --grad-accum 1"
    if command.startswith("gptscratch eval") and "--task" in command:
        command += " --limit 10"  # of each built-in task's 200 questions
    elif command.startswith("gptscratch eval") and "--data" not in command:
        # Scoring the built-in corpus's whole val split (0.5M tokens) takes ~50 s here; the
        # val-split path itself is tested in integration/test_cli.py.
        command += " --data a.txt"
    if re.search(r"gptscratch (sample|chat)\b", command):
        command = re.sub(r"--max-new-tokens \d+", "", command) + " --max-new-tokens 40"
    return command


def make_inputs(folder: Path, hub_gpt2: Path) -> None:
    text = PLAYS.read_text(encoding="utf-8")
    (folder / "my_text.txt").write_text(text, encoding="utf-8")
    write_conversations(folder / "my_chats.jsonl")  # OpenAI-style messages, for train --sft
    for sub, names in (("my_corpus", ["one.txt", "two.txt", "three.md"]),
                       ("notes", ["a.txt", "b.txt"]),
                       ("big_folder", ["part-1.txt", "part-2.txt", "part-3.txt"])):
        (folder / sub).mkdir()
        for i, name in enumerate(names):
            (folder / sub / name).write_text(text[i * 20_000:(i + 1) * 20_000], encoding="utf-8")
    (folder / "a.txt").write_text(text[:30_000], encoding="utf-8")
    (folder / "b.txt").write_text(text[30_000:], encoding="utf-8")
    from hf_models import make_hf_model

    make_hf_model(hub_gpt2, vocab_size=50257, n_positions=256, n_embd=16, n_layer=1)


def gptscratch_words(line: str, cwd: Path) -> list[str] | None:
    """The words after `gptscratch` as bash splits `line` (quotes, $'...'), or None when the
    line is not one plain gptscratch command (a pipe, a redirection, `&&`, `;`)."""
    if not line.startswith("gptscratch ") or re.search(r"[|<>;&`]", line):
        return None
    proc = subprocess.run(["bash", "-c", f"printf '%s\\0' {line}"], cwd=cwd, text=True,
                          capture_output=True, check=True)
    return proc.stdout.split("\0")[1:-1]


def _flag(line: str, name: str) -> str | None:
    found = re.search(rf"--{name}[ =](\S+)", line)
    return found[1].strip("'\"") if found else None


def _sample_promise(line: str, out: str) -> str:
    """A sample command printed its samples: as many as asked, each opening with the prompt
    (text, or JSON lines with the text)."""
    count = int(_flag(line, "num-samples") or 1)
    if "--json" in line:
        rows = [json.loads(r) for r in out.splitlines()]
        return "" if len(rows) == count and all(r["text"] for r in rows) else "JSON samples"
    samples = out.split("-" * 40 + "\n")
    prompt = _flag(line, "prompt")  # its first word is enough: `$'JULIET:\nWherefore` -> JULIET:
    opening = ("To" if "echo" in line else "" if prompt is None
               else re.split(r"[\\ ]", prompt.lstrip("$").strip("'\""))[0])
    if len(samples) != count or not all(len(x.strip()) > len(opening) for x in samples):
        return f"{count} sample(s) printed"
    return "" if all(x.startswith(opening) for x in samples) else "the prompt, then the sample"


def promise_kept(line: str, out: str, cwd: Path) -> str:
    """What the README says the command does, checked after it ran: "" when it did, else what
    is missing. Every command the test runs must be one this knows."""
    command = re.search(r"gptscratch ([\w-]+)", line)
    assert command, line
    name, target = command[1], _flag(line, "out")
    if name == "train":
        run = cwd / (target or "out/" + (_flag(line, "preset") or "shakespeare-char"))
        return "" if (run / "latest" / "checkpoint.json").is_file() else f"a checkpoint in {run}"
    if name == "prepare":
        return "" if target and (cwd / target / "meta.json").is_file() else "a prepared folder"
    if name == "sample":
        return _sample_promise(line, out)
    if name == "chat":  # one line piped in (STDIN), or printf's lines: a block each
        prompts = line.split("|")[0].count("\\n") if "printf" in line else 1
        echoes = re.findall(r"(?m)^> .+\n", out)
        answered = len(out) > sum(map(len, echoes)) + 2 * prompts
        return "" if len(echoes) == prompts and answered else f"{prompts} answer block(s)"
    if name == "eval" and "--task" in line:
        return "" if re.search(r"(?m)^CORE \(mean centered accuracy over \d+ tasks\): [\d.-]+$",
                               out) else "a task table and its CORE score"
    if name == "eval":
        return "" if re.search(r"perplexity [\d.]+", out) else "a perplexity"
    if name == "explain":
        return "" if re.search(r"(?m)^\s+1\. tokenize", out) else "the stages"
    if name in ("viz", "report", "export-hf", "import-hf", "merge-lora"):
        assert target, line
        made = {"viz": target if target.endswith(".png") else target + ".png",
                "report": target, "export-hf": f"{target}/config.json",
                "import-hf": f"{target}/checkpoint.json",
                "merge-lora": f"{target}/checkpoint.json"}[name]
        path = cwd / made
        if not path.is_file():
            return f"{made} written"
        head = path.read_bytes()[:200]
        wanted = {"viz": b"\x89PNG", "report": b"<!DOCTYPE html>"}.get(name, b"")
        return "" if head.startswith(wanted) else f"{made} is a {name} output"
    raise AssertionError(f"no promise known for {line!r}: add one")


class Worker:
    """readme_worker.py in a child process: one command at a time, in the test's folder."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "readme_worker.py")],
                                     cwd=cwd, env=env, text=True, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE)

    def run(self, words: list[str]) -> tuple[int, str, str]:
        """The exit code, stdout and stderr of one command."""
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(words) + "\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith(MARK):
                reply = json.loads(line[len(MARK):])
                return reply["rc"], reply["stdout"], reply["stderr"]
        raise AssertionError(f"the worker stopped (exit {self.proc.wait()}) during {words}")

    def close(self) -> None:
        """End of input: the worker's loop ends; killed if it does not within a minute."""
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.mark.slow
def test_every_readme_example_runs(tmp_path: Path, shared_cache: Path) -> None:
    hub_gpt2 = tmp_path / "hub" / "gpt2"
    make_inputs(tmp_path, hub_gpt2)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "GPTSCRATCH_CACHE": str(shared_cache)}
    worker = Worker(tmp_path, env)
    main_job = shortened("gptscratch train --preset shakespeare-char --data shakespeare "
                         "--out out/shakespeare-char", hub_gpt2)
    ran, skipped = [], []
    try:
        for command in [main_job, *readme_commands()]:
            reason = skip_reason(command)
            if reason:
                skipped.append((command, reason))
                continue
            line = shortened(command, hub_gpt2) if command != main_job else command
            words = gptscratch_words(line, tmp_path)
            if words is None:
                proc = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, text=True,
                                      input=STDIN, capture_output=True, timeout=600)
                rc, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
            else:
                rc, stdout, stderr = worker.run(words)
            assert rc == 0, f"{line}\n{stderr[-2000:]}"
            missing = promise_kept(line, stdout, tmp_path)
            assert not missing, f"{line}\nexpected: {missing}\nstdout: {stdout[-1500:]}"
            ran.append(line)
    finally:
        worker.close()
    # Skipped, each for its reason, and nothing else: the install lines (3), benchmarks (2),
    # torchrun (3), the CUDA example (1, where there is no GPU) and the Hub dataset (1).
    reasons = Counter(reason.split(" (")[0].split(",")[0] for _, reason in skipped)
    assert reasons == Counter({
        "an installer or a benchmark": 5, "needs several GPUs or machines": 3,
        "needs the Hugging Face Hub": 1, **({} if torch.cuda.is_available()
                                            else {"needs a CUDA GPU": 1})}), skipped
    assert len(ran) == len(readme_commands()) + 1 - len(skipped)

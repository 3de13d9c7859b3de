"""Run a rendered run's stage Jobs with podman (or docker) on this machine, as their pods would: a smoke test of
built images with no cluster.

    dynamics-submit SPEC --dry-run --offline > run.yaml      # storage and data on s3:// (an endpoint you reach)
    python images/play_jobs.py run.yaml embed cluster-fit assign scale train eval -- -e AWS_ACCESS_KEY_ID=...

Each named Job (by the suffix of its name) runs one container per completion index, in order: the container's
image, command, args and env from the manifest (`$(VAR)` expanded as the kubelet does, JOB_COMPLETION_INDEX set
for Indexed Jobs), its ConfigMap volumes written to a temporary folder and mounted read-only, its other
emptyDirs as tmpfs (`/dev/shm` as the shm size), the pod's runAsUser/runAsGroup, all capabilities dropped and
no privilege escalation. The host network stands in for the pod network (an S3 endpoint on loopback works),
and a torchrun `--master-addr` resolves to the host. Flags after `--` go to every `run` (credentials, ulimits).
CONTAINER_ENGINE picks the engine (default podman). Stops at the first container that fails, with its code.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

# The field refs the rendered manifests use, as the kubelet resolves them for a pod in namespace "default".
FIELD_REFS = {"metadata.namespace": "default"}


def container_env(container: dict[str, Any], index: int | None) -> dict[str, str]:
    """The container's environment as the kubelet sets it (literal values and the known field refs)."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
        elif (ref := item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")) in FIELD_REFS:
            env[item["name"]] = FIELD_REFS[ref]
    if index is not None:  # the Job controller sets it in every container of an Indexed Job's pods
        env["JOB_COMPLETION_INDEX"] = str(index)
    return env


def expand(word: str, env: dict[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion in command and args (an unknown variable stays as written)."""
    return re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), word)


def run_argv(job: dict[str, Any], index: int, folders: dict[str, Path]) -> list[str]:
    """`run` arguments for completion ``index`` of ``job``; ``folders``: where each ConfigMap volume is written."""
    spec = job["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    env = container_env(container, index if spec.get("completionMode") == "Indexed" else None)
    argv = [expand(word, env) for word in container.get("command", []) + container.get("args", [])]
    security = pod.get("securityContext", {})
    flags = ["--rm", f"--user={security.get('runAsUser', 1000)}:{security.get('runAsGroup', 1000)}",
             "--cap-drop=ALL", "--security-opt=no-new-privileges", "--network=host"]
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            flags.append(f"--volume={folders[mount['name']]}:{mount['mountPath']}:ro")
        elif mount["mountPath"] == "/dev/shm":
            flags.append(f"--shm-size={volume['emptyDir'].get('sizeLimit', '64Mi').removesuffix('i').lower()}")
        else:
            flags.append(f"--tmpfs={mount['mountPath']}:rw,mode=1777")
    flags += [f"--add-host={word.split('=', 1)[1]}:127.0.0.1" for word in argv if word.startswith("--master-addr=")]
    flags += [f"--env={name}={value}" for name, value in env.items()]
    return [*flags, f"--entrypoint={argv[0]}", container["image"], *argv[1:]]


def image_of(job: dict[str, Any]) -> str:
    """The image of the Job's one container."""
    return str(job["spec"]["template"]["spec"]["containers"][0]["image"])


def write_configmaps(job: dict[str, Any], configmaps: dict[str, dict[str, Any]], root: Path) -> dict[str, Path]:
    """Write each ConfigMap volume of ``job`` into a folder under ``root``, as the kubelet projects it."""
    folders: dict[str, Path] = {}
    for volume in job["spec"]["template"]["spec"].get("volumes", []):
        if "configMap" not in volume:
            continue
        folder = folders[volume["name"]] = root / volume["name"]
        folder.mkdir()
        data = configmaps[volume["configMap"]["name"]]["data"]
        for item in volume["configMap"].get("items") or [{"key": key, "path": key} for key in data]:
            (folder / item["path"]).write_text(data[item["key"]], encoding="utf-8")
    return folders


def main(argv: list[str]) -> int:
    """Play the named Jobs of a rendered run, in the rendered order; the first failing container's exit code."""
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = argv[: argv.index("--")] if "--" in argv else argv
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    docs = [doc for doc in yaml.safe_load_all(Path(args[0]).read_text(encoding="utf-8")) if doc]
    configmaps = {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == "ConfigMap"}
    engine = os.environ.get("CONTAINER_ENGINE", "podman")
    for job in (doc for doc in docs if doc["kind"] == "Job"):
        if not any(job["metadata"]["name"].endswith(f"-{suffix}") for suffix in args[1:]):
            continue
        for index in range(job["spec"].get("completions", 1)):
            with tempfile.TemporaryDirectory() as tmp:
                run = run_argv(job, index, write_configmaps(job, configmaps, Path(tmp)))
                # The image and its command only: the flags may carry credentials.
                at = run.index(image_of(job))
                print(f"==> {job['metadata']['name']} #{index}: {run[at]} {run[at - 1].removeprefix('--entrypoint=')} "
                      f"{' '.join(run[at + 1:])}", flush=True)
                command = [engine, "run", *extra, *run]
                code = subprocess.run(command, check=False).returncode
            if code:
                print(f"{job['metadata']['name']} #{index} failed with exit code {code}", file=sys.stderr)
                return code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

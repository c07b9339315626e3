"""The pure cores import no Django: they run in a script, a notebook or a worker without settings."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Every module of each core, imported in a fresh interpreter that has no DJANGO_SETTINGS_MODULE.
PROBE = """
import importlib, pkgutil, sys
for name in ("generation.sdg", "curation.taxonomy", "evaluation.core"):
    package = importlib.import_module(name)
    for module in pkgutil.walk_packages(package.__path__, name + "."):
        importlib.import_module(module.name)
import labweb.errors, labweb.gguf
print(sorted(name for name in sys.modules if name == "django" or name.startswith("django.")))
"""


def test_the_pure_cores_and_the_shared_errors_import_no_django():
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"

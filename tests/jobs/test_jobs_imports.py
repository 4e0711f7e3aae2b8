import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("module", ["jobs", "jobs.wic", "jobs.polar", "jobs.linear", "jobs.cli", "jobs.results",
                                    "jobs.splits", "jobs.words"])
def test_importing_a_job_module_loads_no_transformers_ray_or_torch(module):
    code = (f"import sys, {module}; bad = [m for m in ('transformers', 'ray', 'torch') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr

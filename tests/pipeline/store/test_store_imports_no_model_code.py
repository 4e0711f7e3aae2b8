import subprocess
import sys


def test_reading_a_store_imports_neither_torch_nor_transformers_nor_ray():
    code = (
        "import sys; import pipeline.store, pipeline.store.reader, pipeline.cli, schemas; "
        "bad = [m for m in ('torch', 'transformers', 'ray') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr

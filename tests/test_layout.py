import subprocess
import sys


def test_tasks_and_integrations_install_under_mlcodec():
    import mlcodec.integrations
    import mlcodec.tasks

    assert mlcodec.tasks.__name__ == "mlcodec.tasks"
    assert mlcodec.integrations.__name__ == "mlcodec.integrations"


def test_core_imports_neither_tasks_nor_integrations():
    code = (
        "import sys, mlcodec, mlcodec.cli, mlcodec.demo, mlcodec.train, mlcodec.codecs.hyperprior, "
        "mlcodec.codecs.pixel; "
        "bad = [m for m in sys.modules if m.startswith(('mlcodec.tasks', 'mlcodec.integrations'))]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

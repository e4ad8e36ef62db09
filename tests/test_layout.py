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


def test_the_command_line_starts_without_the_task_models_libraries():
    """Building the parser loads every plugin's options, but not timm, ultralytics or ray: a
    command that trains no head (``info``, ``compress``, ``--version``) starts in the time torch
    takes to import."""
    code = (
        "import sys, mlcodec.cli; mlcodec.cli.build_parser(); "
        "heavy = [m for m in ('timm', 'ultralytics', 'ray', 'mlcodec.tasks.heads') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

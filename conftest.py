"""Make ``mlcodec.tasks`` / ``mlcodec.integrations`` importable from a source checkout.

``python -m pytest`` puts the repository root first on ``sys.path``, so ``import mlcodec`` finds
the source folder ``mlcodec/``, which does not contain ``tasks/`` and ``integrations/`` (they are
mapped in by ``package-dir`` at install time). Register them by path when the import fails.
"""

import importlib.util
import sys
from pathlib import Path

_ROOT = Path(__file__).parent

for _name, _folder in (("mlcodec.tasks", "tasks"), ("mlcodec.integrations", "integrations")):
    try:
        importlib.import_module(_name)
    except ModuleNotFoundError:
        _spec = importlib.util.spec_from_file_location(
            _name, _ROOT / _folder / "__init__.py", submodule_search_locations=[str(_ROOT / _folder)]
        )
        _module = importlib.util.module_from_spec(_spec)
        sys.modules[_name] = _module
        _spec.loader.exec_module(_module)
        setattr(sys.modules["mlcodec"], _folder, _module)

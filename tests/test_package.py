"""The package's import surface: lazy exports, and a command line that answers without torch."""

import subprocess
import sys

import pytest

import captum_entropy


def test_every_export_resolves_and_is_listed():
    for name in captum_entropy.__all__:
        assert getattr(captum_entropy, name) is not None, name
    assert set(captum_entropy.__all__) <= set(dir(captum_entropy))
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        captum_entropy.Nope  # noqa: B018


def test_help_answers_without_importing_torch():
    code = (
        "import sys\n"
        "from captum_entropy.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "assert 'torch' not in sys.modules, 'the --help path imported torch'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "train" in out.stdout and "demo" in out.stdout

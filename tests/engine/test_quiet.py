"""quiet_libraries: no library progress bars or info logs inside, the user's settings restored after."""

from diffusers.utils import logging as diffusers_logging
from transformers.utils import logging as transformers_logging

from upscale_dit.engine.quiet import quiet_libraries


def test_quiet_libraries_silences_and_restores():
    diffusers_logging.set_verbosity_info()
    transformers_logging.set_verbosity_warning()
    transformers_logging.disable_progress_bar()
    diffusers_logging.enable_progress_bar()
    with quiet_libraries():
        assert diffusers_logging.get_verbosity() == diffusers_logging.ERROR
        assert transformers_logging.get_verbosity() == transformers_logging.ERROR
        assert not diffusers_logging.is_progress_bar_enabled()
        assert not transformers_logging.is_progress_bar_enabled()
    assert diffusers_logging.get_verbosity() == diffusers_logging.INFO
    assert transformers_logging.get_verbosity() == transformers_logging.WARNING
    assert diffusers_logging.is_progress_bar_enabled()
    assert not transformers_logging.is_progress_bar_enabled()  # it was off before: stays off
    transformers_logging.enable_progress_bar()
    diffusers_logging.set_verbosity_warning()

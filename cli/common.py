"""What the ``pneumoscan`` command's modules share: exit codes and TensorFlow's (quiet) set-up.

Exit codes: 0 success, 1 some input failed (``predict``), 2 usage, data or folder error,
3 model error, 4 the job failed (``status``) or has no results yet (``results``).
"""

from __future__ import annotations

from pneumoscan.settings import get_settings

EXIT_OK, EXIT_INPUT_FAILED, EXIT_USAGE, EXIT_MODEL, EXIT_JOB_FAILED = 0, 1, 2, 3, 4


def configure_tensorflow_from_settings() -> None:
    """TensorFlow's thread pools from ``PNEUMOSCAN_TF_*``, before a model is loaded."""
    from cli.quiet import import_tensorflow
    from pneumoscan.model.architectures import configure_tensorflow

    import_tensorflow()
    settings = get_settings()
    configure_tensorflow(settings.tf_intra_op_threads, settings.tf_inter_op_threads)

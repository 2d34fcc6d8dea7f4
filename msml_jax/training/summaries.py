"""TensorBoard scalars of a run, written by TensorFlow's summary ops (the I/O edge: TF is imported on first use).

`tf.summary.scalar` lives in the `tensorboard` package, which the project does not need; this writes the same
event records with `tf.summary.write` and the scalars plugin's metadata, so `tensorboard --logdir WORKDIR/tensorboard`
plots them.
"""

import os


class SummaryWriter:
    """Scalars to `logdir` (event files); `enabled=False` (processes other than 0) writes nothing."""

    def __init__(self, logdir, enabled=True):
        self._writer = None
        if not enabled:
            return
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf
        from tensorflow.core.framework import summary_pb2

        self._tf = tf
        self._metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
        )
        self._writer = tf.summary.create_file_writer(logdir)

    def scalars(self, step, values, prefix=""):
        """Writes each finite-or-not float of `values` (dict name -> number) as `prefix + name` at `step`."""
        if self._writer is None:
            return
        tf = self._tf
        with self._writer.as_default():
            for name, value in values.items():
                tf.summary.write(prefix + name, tf.constant(float(value), tf.float32), step=int(step),
                                 metadata=self._metadata)

    def flush(self):
        if self._writer is not None:
            self._writer.flush()

    def close(self):
        if self._writer is not None:
            self._writer.close()

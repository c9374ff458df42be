"""Training entry point, Flax-examples style.

    python -m mirrortalk_jax.main --config=mirrortalk_jax/configs/synthtalk_regression.py:tiny --workdir=runs/regression

Any config field can be overridden: --config.train.num_steps=500. The logic lives in
`mirrortalk_jax.train.trainer.train_and_evaluate`, which tests and notebooks call directly.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from mirrortalk_jax.evaluate import training_samples
from mirrortalk_jax.train import distributed, trainer

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics (resumed if it has them).")
config_flags.DEFINE_config_file("config", None, "Experiment config file, e.g. mirrortalk_jax/configs/x.py:tiny.",
                                lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    distributed.initialize_from_env()  # multi-process jobs (launch/*.sh); a no-op for one process
    logging.info("config:\n%s", FLAGS.config)
    trainer.train_and_evaluate(FLAGS.config, FLAGS.workdir, on_samples=training_samples.errors_and_preview)


if __name__ == "__main__":
    app.run(main)

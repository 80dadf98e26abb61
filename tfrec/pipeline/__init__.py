"""TFX-style pipelines: :mod:`.definition` describes the steps (ingest, transform, pretrain, finetune,
evaluate, export, push) as data, :mod:`.steps` does each step's work, :mod:`.runner` runs them with caching
and a manifest.  ``tfrec pipeline --config C`` runs one; ``tfrec quickstart`` is the pipeline of the
packaged ``configs/quickstart-pipeline.yaml``, followed by a query to the model it pushed."""

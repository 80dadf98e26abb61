"""TFX-style pipelines of tfrec: ingest, transform, pretrain, fine-tune, evaluate, export, push."""

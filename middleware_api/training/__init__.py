"""LoRA training with kohya sd-scripts: the command line both runners share, and the SageMaker job's entry."""

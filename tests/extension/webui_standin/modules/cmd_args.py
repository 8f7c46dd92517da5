"""The WebUI's argument parser (a few of its flags); extensions' `preload(parser)` add theirs."""

import argparse

parser = argparse.ArgumentParser()
parser.add_argument("--api", action="store_true")
parser.add_argument("--nowebui", action="store_true")
parser.add_argument("--skip-install", action="store_true")
parser.add_argument("--ckpt", type=str, default=None)
parser.add_argument("--embeddings-dir", type=str, default="embeddings")
parser.add_argument("--hide-ui-dir-config", action="store_true")
parser.add_argument("--enable-console-prompts", action="store_true")

"""Where the stand-in WebUI lives (`script_path`), its data, models and extensions."""

import os

script_path = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
data_path = os.environ.get("WEBUI_STANDIN_DATA", os.path.join(script_path, "data"))
models_path = os.path.join(data_path, "models")
extensions_dir = os.environ.get("WEBUI_STANDIN_EXTENSIONS", os.path.join(script_path, "extensions"))

"""Where the stand-in WebUI lives (`script_path`), its data and its extensions."""

import os

script_path = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
data_path = os.environ.get("WEBUI_STANDIN_DATA", os.path.join(script_path, "data"))
extensions_dir = os.environ.get("WEBUI_STANDIN_EXTENSIONS", os.path.join(script_path, "extensions"))

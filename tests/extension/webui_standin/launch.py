"""The WebUI's `launch.py` as extensions' `install.py` sees it: `launch_utils`' helpers re-exported."""

from modules import launch_utils

args = launch_utils.args
python = launch_utils.python
run = launch_utils.run
is_installed = launch_utils.is_installed
run_pip = launch_utils.run_pip
git_tag = launch_utils.git_tag

"""Run by the WebUI's launcher (`python install.py`, with the WebUI's `launch` importable): installs what the
extension needs only when missing, never touching the WebUI's own gradio, fastapi or pydantic."""

import launch

# (import name, pip requirement): what the extension imports beyond the WebUI's own packages.
REQUIREMENTS = [
    ("requests", "requests>=2.25"),
]
NEVER_INSTALLED = ("gradio", "fastapi", "pydantic")  # the WebUI's pins must win


def missing(requirements=None):
    """The requirements whose package is not installed."""
    return [
        (name, spec)
        for name, spec in (REQUIREMENTS if requirements is None else requirements)
        if name.split(".")[0] not in NEVER_INSTALLED and not launch.is_installed(name)
    ]


def main():
    for _name, spec in missing():
        launch.run_pip(f'install "{spec}"', f"{spec} for the ESD cloud extension")


if __name__ == "__main__":
    main()

"""lipkit nodes for ComfyUI: LipSync, LipSync Plan and Length Adjust.

Load it either way ComfyUI loads node packs:

- copied (or linked) into ``ComfyUI/custom_nodes/<folder>/``: ComfyUI imports this file by path
  with importlib, as a package named after the folder;
- pip-installed (``pip install integrations/comfyui``): the package is ``lipkit_comfyui``, and a
  one-line file in ``custom_nodes/`` re-exports its mappings (see README.md).
"""

from __future__ import annotations

if __name__ == "lipkit":
    # Older ComfyUI versions register a pack under its folder's name (newer ones use the whole
    # path): a folder called "lipkit" would take the place of the lipkit library in sys.modules.
    raise ImportError(
        "this node pack's folder is named 'lipkit', which hides the lipkit library: "
        "rename it, e.g. to custom_nodes/lipkit-comfyui"
    )

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]

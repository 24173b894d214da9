"""Docker label keys and name conventions the controller reads, in one place.

Owns the spelling of every label key (DS01's own ``ds01.*`` namespace, the legacy ``aime.mlc.*``
fallbacks, and the keys other tools write that DS01 reads). The observer, the planner and the
executor import the constants from here so a key is never spelled twice. Values only: this module
must not import anything from the project or do any I/O.
"""

from __future__ import annotations

from typing import Final

# --- Ownership and management (label-schema.yaml, notes section 2.1) ------------------------
DS01_USER: Final = "ds01.user"
DS01_MANAGED: Final = "ds01.managed"
DS01_CONTAINER_TYPE: Final = "ds01.container_type"
DS01_INTERFACE: Final = "ds01.interface"
DS01_CREATED_AT: Final = "ds01.created_at"
DS01_PROTECTED: Final = "ds01.protected"
DS01_MONITORING: Final = "ds01.monitoring"
DS01_SLICE: Final = "ds01.slice"

# --- GPU allocation labels --------------------------------------------------------------------
DS01_GPU_UUID: Final = "ds01.gpu.uuid"  # a single UUID
DS01_GPU_UUIDS: Final = "ds01.gpu.uuids"  # comma-separated UUIDs
DS01_GPU_SLOT: Final = "ds01.gpu_slot"  # despite the name, holds the allocated UUID (or a slot)
DS01_GPU_SLOTS: Final = "ds01.gpu.slots"  # comma-separated "X", "X.Y" or "X:Y"
DS01_GPU_ALLOCATED: Final = "ds01.gpu.allocated"
DS01_GPU_EPHEMERAL: Final = "ds01.gpu_ephemeral"

# --- Legacy AIME namespace, still read as a fallback ----------------------------------------
AIME_USER: Final = "aime.mlc.USER"
AIME_DS01_MANAGED: Final = "aime.mlc.DS01_MANAGED"

# --- Other tools' labels that DS01 reads ----------------------------------------------------
DEVCONTAINER_PREFIX: Final = "devcontainer."
DEVCONTAINER_LOCAL_FOLDER: Final = "devcontainer.local_folder"
COMPOSE_PREFIX: Final = "com.docker.compose."
COMPOSE_PROJECT: Final = "com.docker.compose.project"
COMPOSE_SERVICE: Final = "com.docker.compose.service"
COMPOSE_WORKING_DIR: Final = "com.docker.compose.project.working_dir"

# --- Tests -------------------------------------------------------------------------------------
# Every object the test suites create carries this label; teardown removes only its own.
DS01_TEST: Final = "ds01.test"

# --- Name conventions ----------------------------------------------------------------------------
AIME_NAME_SEPARATOR: Final = "._."  # AIME/mlc container names: "<name>._.<uid>"
VSC_NAME_PREFIX: Final = "vsc-"  # VS Code dev containers created without labels

# Label values that mean "yes" (compared case-insensitively after stripping whitespace).
TRUE_VALUE: Final = "true"

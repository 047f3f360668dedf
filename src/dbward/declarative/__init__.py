"""Configuration as code: ``dbward apply -f FILE.yaml`` and ``dbward export``.

``loader`` reads the YAML keeping line numbers, ``schema`` defines the objects,
``sections`` knows how each kind is stored, ``plan`` compares and applies, ``export`` writes
the store back out in the same format.
"""

# Policy sections replace the plain connection/grant handlers (after sections registered).
from dbward.declarative import approval_sections, masking_sections, policy_sections
from dbward.declarative.export import export_state, export_yaml, to_yaml
from dbward.declarative.loader import Document, FileError, load_file, parse_text
from dbward.declarative.plan import Change, Plan, apply_plan, build_plan, plan_document, validate
from dbward.declarative.sections import SECTIONS, Context, Section, register_section

__all__ = [
    "SECTIONS",
    "Change",
    "Context",
    "Document",
    "FileError",
    "Plan",
    "Section",
    "apply_plan",
    "approval_sections",
    "build_plan",
    "export_state",
    "export_yaml",
    "load_file",
    "masking_sections",
    "parse_text",
    "plan_document",
    "policy_sections",
    "register_section",
    "to_yaml",
    "validate",
]

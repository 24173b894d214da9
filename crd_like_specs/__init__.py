"""CRD-like kinds: the pydantic models that admins' YAML documents are validated against.

Owns the vocabulary shared by every layer (container types, reasons for exemption), the kinds
themselves, their generated JSON Schemas and commented examples. Imports nothing from the controller.
"""

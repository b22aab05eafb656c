"""Image signatures beyond Notary v1, behind one verifier port (docs/signatures.md).

`port.py` holds the request type and the Protocol every format's verifier implements; `facts.py`
the one facts shape they all produce (docs/rego-input.md, `images[i].signatures`); `service.py`
runs the verifiers of an admission in parallel under one deadline. Formats: `simple.py` (Red Hat
simple signing, on the strict OpenPGP reader `openpgp.py`).
"""

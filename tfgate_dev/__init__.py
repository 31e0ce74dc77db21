"""Development tooling for tfgate, kept out of the `proxy` package so the shipped proxy
(the container image installs `proxy/` only) does not carry it:

- `demo`: `tfgate demo`, a real TF model behind tfgate with allowed and refused calls;
- `devpki`: throwaway CAs, certificates and signing keys (`certs/make-dev-pki`);
- `testbackend`: a ModelServer stand-in serving real SavedModels that records requests;
- `configdoc`: docs/config.md, generated from the config schema (`make docs`).
"""

"""ESD middleware: the REST API of ESD 1.5.0 on an embedded or an AWS backend."""

API_VERSION = "1.5.0"

"""faxbridge: email and folders to cloud fax."""

__version__ = "0.1.0"

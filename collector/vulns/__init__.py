"""Vulnerability data: what Debian, Ubuntu and CISA say, imported offline, matched to hosts.

``sources`` reads each format (the Debian Security Tracker's JSON, OSV records, CISA's Known
Exploited Vulnerabilities catalogue) into `model.Entry` records; ``importing`` replaces a
data set in one transaction; ``matching`` holds the entries in memory, indexed by release and
source package, and says which of them a host's installed source versions fall under.
"""

"""One reader per format of vulnerability data, each a pure function of the file's bytes."""

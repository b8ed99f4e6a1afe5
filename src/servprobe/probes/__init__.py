"""The probe-file language: parser, model, regex matching, version templates."""

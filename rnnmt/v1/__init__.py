"""Generated stubs of ``protos/rnnmt/v1/translator.proto``: run ``scripts/gen_protos.sh``, never edit."""

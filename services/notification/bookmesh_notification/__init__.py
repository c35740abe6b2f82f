"""bookmesh's notification service: notices to members about their rentals, written from the
rental service's events, served over gRPC as a full member of the mesh. A Python service
among Rust ones: the contracts in proto/ keep the mesh whole (docs/polyglot-services.md).
"""

"""Infrastructure: registries, config files, seeding, CPU threads, quiet loading.
"""

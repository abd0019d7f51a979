"""Question -> passages -> answer over a department's regulations."""

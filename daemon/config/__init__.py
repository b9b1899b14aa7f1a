"""Campaign configuration: safe, position-aware YAML loading and validation."""

from topslot.config.campaigns import LoadResult, campaign_files, load_campaign_file, load_campaigns
from topslot.yaml_source import YamlDocument, load_yaml

__all__ = ["LoadResult", "YamlDocument", "campaign_files", "load_campaign_file", "load_campaigns", "load_yaml"]

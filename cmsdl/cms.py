"""CMS computing facts shared by simulators and tools: job exit codes and the computing sites.

Defined once here; the workflow, popularity and transfer simulators and the workflow clustering read them.
"""

from __future__ import annotations

# exit codes of CMS production jobs (CMSSW, the job wrapper, WMAgent) and what they mean
EXIT_CODES: dict[int, str] = {
    -1: "no exit code reported",
    84: "CMSSW: a required file was not found",
    85: "CMSSW: error reading a file",
    92: "CMSSW: file open failed, also after fallback",
    134: "SIGABRT: process aborted",
    139: "SIGSEGV: segmentation violation",
    8001: "CMSSW: other CMS exception",
    8004: "CMSSW: std::bad_alloc, out of memory",
    8020: "CMSSW: file open error",
    8021: "CMSSW: file read error",
    8028: "CMSSW: file open error with fallback",
    50110: "executable file is not found",
    50660: "wrapper killed the job for too much RSS memory",
    50664: "wrapper killed the job for too much wall-clock time",
    60307: "stage-out of an output file failed",
    61202: "cannot determine the site to stage out to",
    71304: "WMAgent killed the job for exceeding wall-clock time",
    71305: "WMAgent killed the job for exceeding memory",
    99303: "no framework job report",
    99305: "job report without an exit code",
}

# CMS computing sites (tier 0 to 3) that production workflows run at
SITES: tuple[str, ...] = (
    "T0_CH_CERN", "T1_DE_KIT", "T1_ES_PIC", "T1_FR_CCIN2P3", "T1_IT_CNAF", "T1_RU_JINR", "T1_UK_RAL",
    "T1_US_FNAL", "T2_BE_IIHE", "T2_BE_UCL", "T2_CH_CERN", "T2_CH_CERN_HLT", "T2_CH_CSCS", "T2_CN_Beijing",
    "T2_DE_DESY", "T2_DE_RWTH", "T2_EE_Estonia", "T2_ES_CIEMAT", "T2_ES_IFCA", "T2_FR_GRIF_IRFU",
    "T2_FR_GRIF_LLR", "T2_FR_IPHC", "T2_IT_Bari", "T2_IT_Legnaro", "T2_IT_Pisa", "T2_IT_Rome",
    "T2_KR_KISTI", "T2_PL_Swierk", "T2_PT_NCG_Lisbon", "T2_RU_JINR", "T2_TW_NCHC", "T2_UK_London_Brunel",
    "T2_UK_London_IC", "T2_UK_SGrid_RALPP", "T2_US_Caltech", "T2_US_Florida", "T2_US_MIT",
    "T2_US_Nebraska", "T2_US_Purdue", "T2_US_UCSD", "T2_US_Vanderbilt", "T2_US_Wisconsin",
    "T3_US_FNALLPC", "T3_US_NERSC", "T3_US_OSG", "T3_IT_Trieste",
)
NO_SITE = "NoReportedSite"  # the site name of errors that no site reported
# the six sites of the seed's cache study (datagrid.cea.fr, desy.de, fnal.gov, hep.wisc.edu, jinr-t1.ru, lnl.infn.it)
CACHE_STUDY_SITES: tuple[str, ...] = ("T2_FR_GRIF_IRFU", "T2_DE_DESY", "T1_US_FNAL", "T2_US_Wisconsin", "T1_RU_JINR",
                                      "T2_IT_Legnaro")

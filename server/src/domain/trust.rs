use std::fmt;
use std::str::FromStr;

/// Trust levels (aumos names), ordered lowest to highest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TrustLevel {
    L0Observer = 0,
    L1Monitor = 1,
    L2Suggest = 2,
    L3ActApprove = 3,
    L4ActReport = 4,
    L5Autonomous = 5,
}

impl TrustLevel {
    pub const ALL: [TrustLevel; 6] = [
        Self::L0Observer,
        Self::L1Monitor,
        Self::L2Suggest,
        Self::L3ActApprove,
        Self::L4ActReport,
        Self::L5Autonomous,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::L0Observer => "L0_OBSERVER",
            Self::L1Monitor => "L1_MONITOR",
            Self::L2Suggest => "L2_SUGGEST",
            Self::L3ActApprove => "L3_ACT_APPROVE",
            Self::L4ActReport => "L4_ACT_REPORT",
            Self::L5Autonomous => "L5_AUTONOMOUS",
        }
    }

    pub fn rank(self) -> u8 {
        self as u8
    }

    pub fn from_rank(rank: u8) -> Option<Self> {
        Self::ALL.get(rank as usize).copied()
    }

    /// One level lower, saturating at L0.
    pub fn lowered_by(self, steps: u64) -> Self {
        let rank = (self.rank() as u64).saturating_sub(steps) as u8;
        Self::from_rank(rank).unwrap_or(Self::L0Observer)
    }
}

impl fmt::Display for TrustLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TrustLevel {
    type Err = String;

    /// Accepts the full name ("L3_ACT_APPROVE") or the short form ("L3"), any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let up = s.trim().to_ascii_uppercase();
        Self::ALL
            .into_iter()
            .find(|l| l.name() == up || l.name().split('_').next() == Some(up.as_str()))
            .ok_or_else(|| {
                format!("unknown trust level {s:?}; use one of L0_OBSERVER, L1_MONITOR, L2_SUGGEST, L3_ACT_APPROVE, L4_ACT_REPORT, L5_AUTONOMOUS")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_by_full_or_short_name_and_order_by_rank() {
        assert_eq!(
            "l3".parse::<TrustLevel>().unwrap(),
            TrustLevel::L3ActApprove
        );
        assert_eq!(
            "L4_ACT_REPORT".parse::<TrustLevel>().unwrap(),
            TrustLevel::L4ActReport
        );
        assert!("L9".parse::<TrustLevel>().is_err());
        assert!(TrustLevel::L2Suggest < TrustLevel::L3ActApprove);
        assert_eq!(TrustLevel::L1Monitor.lowered_by(5), TrustLevel::L0Observer);
    }
}

